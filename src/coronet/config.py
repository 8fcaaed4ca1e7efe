"""Where things live by default. Run settings themselves are plain dataclasses next to the code that uses them."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable naming the data directory (overridden by ``--data``).
DATA_ENV = "CORONET_DATA"
#: Used when neither ``--data`` nor ``CORONET_DATA`` is given.
DEFAULT_DATA_DIR = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "coronet" / "data"


def resolve_data_dir(option: str | os.PathLike | None = None) -> Path:
    """The data directory: ``option`` (``--data``) > ``$CORONET_DATA`` > :data:`DEFAULT_DATA_DIR`."""
    if option:
        return Path(option).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return DEFAULT_DATA_DIR
