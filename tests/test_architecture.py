"""The house's layers: no module imports from a layer above its own, and the CLI uses no private function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "coronet"
#: package or module -> layer; training and deploy share a layer but must not import each other.
LAYERS = {
    "errors": 0,
    "config": 0,
    "tasks": 0,
    "paper": 0,
    "layout": 0,
    "versions": 0,
    "data": 1,
    "models": 2,
    "training": 3,
    "deploy": 3,
    "evaluation": 4,
    "reproduce": 5,
    "cli": 6,
    "model": 6,
    "imageio": 6,
    "__main__": 7,  # python -m coronet: the CLI
}


def top(module: str) -> str:
    return module.split(".")[0]


def imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported coronet module, names) for every import in ``path``, absolute or relative."""
    package = ".".join(path.relative_to(SRC.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            else:
                module = node.module or ""
            if module.startswith("coronet"):
                found.append((module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names if alias.name.startswith("coronet")]
    return found


MODULES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[str(p.relative_to(SRC)) for p in MODULES])
def test_no_module_reaches_up_a_layer(path):
    own = top(str(path.relative_to(SRC).with_suffix("")).replace("/", "."))
    if own == "__init__":
        return
    for module, _names in imports(path):
        parts = module.split(".")[1:]
        if not parts:  # "from coronet import __version__"
            continue
        other = parts[0]
        assert LAYERS[other] <= LAYERS[own], f"{path.relative_to(SRC)} imports {module} (a higher layer)"
        if LAYERS[other] == LAYERS[own] and other != own:
            pytest.fail(f"{path.relative_to(SRC)} imports {module}: {own} and {other} are siblings")


def test_the_cli_uses_no_private_function_of_a_lower_layer():
    for path in (SRC / "cli").glob("*.py"):
        for module, names in imports(path):
            if not module.startswith("coronet.cli"):
                # Dunder names (``__version__``) are the package's public metadata, not private.
                private = [n for n in names if n.startswith("_") and not n.endswith("__")]
                assert not private, f"{path.name} imports {private} from {module}"


def test_old_entry_points_still_work():
    from coronet.data.imageio import read_image as new_read
    from coronet.data.imageio import resize_square as new_resize
    from coronet.imageio import read_image, resize_square
    from coronet.model import build_model
    from coronet.models.coronet import build_model as new_build

    assert read_image is new_read and resize_square is new_resize and build_model is new_build
