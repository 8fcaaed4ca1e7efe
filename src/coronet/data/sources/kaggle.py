"""Kaggle "Chest X-Ray Images (Pneumonia)" (Kermany et al.): ``chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/``.

Bacterial vs viral comes from the file name (``person12_bacteria_47``,
``person12_virus_48``); the patient id from ``personN`` for pneumonia and from the
``IM-NNNN`` / ``NORMAL2-IM-NNNN`` number for normal films (``NORMAL2`` numbers are a
separate series). The original split is kept in ``split``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .base import list_images, make_table, require_dir

SOURCE = "kaggle"
SPLITS = ("train", "test", "val")

_PNEUMONIA = re.compile(r"^(person\d+)_(bacteria|virus)_\d+", re.IGNORECASE)
_NORMAL = re.compile(r"^((?:NORMAL2-)?IM-\d+)-\d+", re.IGNORECASE)


def parse_kaggle_name(name: str, folder: str) -> tuple[str, str]:
    """Return ``(label, patient)`` for a Kermany file name inside ``NORMAL`` or ``PNEUMONIA``.

    >>> parse_kaggle_name("person1430_bacteria_3695.jpeg", "PNEUMONIA")
    ('bacterial', 'person1430')
    >>> parse_kaggle_name("NORMAL2-IM-0027-0001.jpeg", "NORMAL")
    ('normal', 'NORMAL2-IM-0027')
    """
    stem = Path(name).stem
    if folder.upper() == "PNEUMONIA":
        match = _PNEUMONIA.match(stem)
        if not match:
            raise ValueError(f"{name}: not a personN_bacteria_M / personN_virus_M name")
        kind = match.group(2).lower()
        return ("bacterial" if kind == "bacteria" else "viral"), match.group(1).lower()
    match = _NORMAL.match(stem)
    if not match:
        raise ValueError(f"{name}: not an IM-NNNN-NNNN / NORMAL2-IM-NNNN-NNNN name")
    return "normal", match.group(1).upper()


def read_kaggle(root: str | Path) -> pd.DataFrame:
    """Read every image of a chest-xray-pneumonia download at ``root`` (the folder holding ``chest_xray``).

    A ``manifest.csv`` beside ``chest_xray`` (as in this project's shared copy) contributes its
    ``source_variant`` column, keyed by file name.
    """
    root = require_dir(Path(root), "chest-xray-pneumonia folder")
    base = require_dir(root / "chest_xray", "chest_xray folder")
    rows = []
    for split in SPLITS:
        for folder in ("NORMAL", "PNEUMONIA"):
            directory = base / split / folder
            if not directory.is_dir():
                continue
            for path in list_images(directory):
                label, patient = parse_kaggle_name(path.name, folder)
                rows.append(
                    {
                        "path": str(path),
                        "label": label,
                        "source": SOURCE,
                        "patient_id": f"{SOURCE}:{patient}",
                        "view": "PA",
                        "split": split,
                    }
                )
    table = make_table(rows, SOURCE)
    manifest = root / "manifest.csv"
    if manifest.is_file() and not table.empty:
        variants = pd.read_csv(manifest, dtype=str, usecols=["filename", "source_variant"])
        names = table["path"].map(lambda p: Path(p).name)
        table["source_variant"] = names.map(dict(zip(variants.filename, variants.source_variant)))
    return table
