"""Readers for each public chest X-ray source, one small module each, one table out.

>>> from coronet.sources import read_source
>>> table = read_source("kaggle", "/data/kaggle-pneumonia")   # doctest: +SKIP

Every reader returns the columns :data:`COLUMNS`: ``path, label, source,
patient_id, view, split`` (``patient_id`` is prefixed by the source name so ids
never collide across sources).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from .base import COLUMNS, LABELS, canonical_label
from .cohen import read_cohen
from .folder import read_folder
from .kaggle import parse_kaggle_name, read_kaggle
from .ozturk import read_ozturk

#: name -> (reader, folder under the data directory where ``coronet data fetch`` puts it)
SOURCES: dict[str, tuple[Callable[..., pd.DataFrame], str]] = {
    "cohen": (read_cohen, "cohen-covid"),
    "kaggle": (read_kaggle, "kaggle-pneumonia"),
    "ozturk": (read_ozturk, "ozturk-dataset2"),
}


def source_dir(name: str, data_dir: str | Path) -> Path:
    """Where source ``name`` lives under a data directory (``folder``: the data directory itself)."""
    if name == "folder":
        return Path(data_dir)
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose from {', '.join([*SOURCES, 'folder'])}")
    return Path(data_dir) / SOURCES[name][1]


def find_source_root(name: str, path: str | Path, markers: tuple[str, ...] = ()) -> Path:
    """Source ``name``'s own folder, given it (it holds every name in ``markers``) or a data directory holding it."""
    path = Path(path)
    if markers and all((path / marker).is_dir() for marker in markers):
        return path
    if source_dir(name, path).is_dir():
        return source_dir(name, path)
    what = f"folders {', '.join(markers)}" if markers else "its files"
    raise FileNotFoundError(
        f"{path}: neither the {name} source ({what}) nor a data directory holding {SOURCES[name][1]}/"
    )


def read_source(name: str, root: str | Path, **options) -> pd.DataFrame:
    """Read one source: ``cohen``, ``kaggle``, ``ozturk`` (``root`` is that source's folder) or ``folder``."""
    if name == "folder":
        return read_folder(root, **options)
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose from {sorted(SOURCES) + ['folder']}")
    return SOURCES[name][0](root, **options)


__all__ = [
    "COLUMNS",
    "LABELS",
    "SOURCES",
    "canonical_label",
    "parse_kaggle_name",
    "read_cohen",
    "find_source_root",
    "read_folder",
    "read_kaggle",
    "read_ozturk",
    "read_source",
    "source_dir",
]
