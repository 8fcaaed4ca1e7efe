"""Any folder-per-class dataset (users' own data): ``ROOT/<class>/**/<image>``.

Class folder names are mapped to canonical labels (``Covid-19`` -> ``covid``,
``No_findings`` -> ``normal`` ...), or through an explicit ``label_map``. With no
patient metadata, each image is its own patient unless ``patient_from`` says how to
derive one from the file stem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from .base import canonical_label, is_image_file, make_table, require_dir

SOURCE = "folder"


def read_folder(
    root: str | Path, label_map: Mapping[str, str] | None = None, patient_from: str | None = None
) -> pd.DataFrame:
    """Read ``root/<class>/...`` recursively.

    label_map: folder name -> canonical label; folders not in it are skipped. Without it,
        every sub-folder whose name is a known alias (see :func:`canonical_label`) is a class.
    patient_from: a regular expression with one group, applied to the file stem, giving the
        patient id (e.g. ``r"^(\\d+)_"``); stems that do not match are their own patient.
    """
    root = require_dir(Path(root), "dataset folder")
    pattern = re.compile(patient_from) if patient_from else None
    rows = []
    for directory in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if label_map is not None:
            if directory.name not in label_map:
                continue
            label = canonical_label(label_map[directory.name])
        else:
            try:
                label = canonical_label(directory.name)
            except ValueError:
                continue
        for path in sorted(p for p in directory.rglob("*") if is_image_file(p)):
            match = pattern.match(path.stem) if pattern else None
            patient = match.group(1) if match else str(path.relative_to(root).with_suffix(""))
            rows.append(
                {
                    "path": str(path),
                    "label": label,
                    "source": SOURCE,
                    "patient_id": f"{SOURCE}:{patient}",
                    "view": pd.NA,
                    "split": pd.NA,
                }
            )
    return make_table(rows, SOURCE)
