"""``python -m coronet``: the ``coronet`` command (``[project.scripts]`` runs the same typer app)."""

from .cli import app

if __name__ == "__main__":
    app()
