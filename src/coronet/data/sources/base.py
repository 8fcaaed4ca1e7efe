"""The common table every source reader returns, and the label vocabulary.

Each reader understands one public source's own layout and metadata and turns it
into the same :data:`COLUMNS`, so that preparation, training and evaluation never
need to know where an image came from.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

#: Columns every reader returns, in this order (extra source-specific columns may follow).
COLUMNS = ("path", "label", "source", "patient_id", "view", "split")

#: Canonical labels. ``pneumonia`` is for sources that do not split bacterial from viral; ``other`` is "not
#: COVID-19" where nothing more is known (both are partial labels in training, :data:`coronet.tasks.PARTIAL_LABELS`).
LABELS = ("covid", "normal", "bacterial", "viral", "pneumonia", "other")

#: File suffixes treated as images when walking folders (case-insensitive).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".bmp", ".tif", ".tiff"})

# Folder names seen in public datasets, mapped to canonical labels.
_LABEL_ALIASES = {
    "covid": "covid",
    "covid19": "covid",
    "covid-19": "covid",
    "covid_19": "covid",
    "normal": "normal",
    "no_findings": "normal",
    "no findings": "normal",
    "nofindings": "normal",
    "bacterial": "bacterial",
    "bacteria": "bacterial",
    "pneumonia_bacterial": "bacterial",
    "viral": "viral",
    "virus": "viral",
    "pneumonia_viral": "viral",
    "pneumonia": "pneumonia",
}


def canonical_label(name: str) -> str:
    """Map a class folder or metadata name (``Covid-19``, ``No_findings``, ``virus`` ...) to a canonical label.

    Raises ``ValueError`` for names that are not known aliases.
    """
    key = name.strip().lower()
    if key in _LABEL_ALIASES:
        return _LABEL_ALIASES[key]
    raise ValueError(f"unknown class name {name!r}; known: {sorted(set(_LABEL_ALIASES))}")


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (deterministic across file systems)."""
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def make_table(rows: list[dict], source: str) -> pd.DataFrame:
    """Build a reader's output table: :data:`COLUMNS` first, extra columns after, sorted by path."""
    table = pd.DataFrame(rows)
    if table.empty:
        warnings.warn(f"{source}: no images found", stacklevel=3)
        return pd.DataFrame(columns=list(COLUMNS))
    for column in COLUMNS:
        if column not in table:
            table[column] = pd.NA
    extra = [c for c in table.columns if c not in COLUMNS]
    table = table[list(COLUMNS) + extra]
    return table.sort_values("path", kind="stable").reset_index(drop=True)


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: {what} not found")
    return path


@dataclass(frozen=True)
class RemoteSource:
    """Where a public source is downloaded from and how its archive maps onto its folder."""

    url: str
    sha256: str | None  #: known archive checksum; None: computed, printed and recorded, not verified
    #: (path inside the archive, matched as a suffix of whole path components; the
    #: shallowest match wins) -> destination relative to the source's folder
    members: tuple[tuple[str, str], ...]
