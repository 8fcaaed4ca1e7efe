"""Ozturk et al.'s dataset-2: ``{Covid-19, No_findings, Pneumonia}/``.

No_findings and Pneumonia are ChestX-ray8 films named ``<patient>_<follow-up>``,
so the patient id is the part before the underscore. The Covid-19 files are
copies from the Cohen collection under their original names, with no patient
metadata: each is treated as its own patient (near-duplicate detection in
preparation catches repeated films).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from .base import list_images, make_table, require_dir

SOURCE = "ozturk"
FOLDERS = {"Covid-19": "covid", "No_findings": "normal", "Pneumonia": "pneumonia"}

_CHESTXRAY8 = re.compile(r"^(\d{8})_\d{3}$")


def read_ozturk(root: str | Path) -> pd.DataFrame:
    """Read Ozturk et al.'s ``X-Ray Image DataSet`` folder at ``root``."""
    root = require_dir(Path(root), "Ozturk dataset-2 folder")
    rows = []
    for folder, label in FOLDERS.items():
        directory = require_dir(root / folder, f"class folder {folder!r}")
        for path in list_images(directory):
            match = _CHESTXRAY8.match(path.stem)
            patient = match.group(1) if match else path.stem
            rows.append({
                "path": str(path), "label": label, "source": SOURCE,
                "patient_id": f"{SOURCE}:{patient}", "view": pd.NA, "split": pd.NA,
            })
    return make_table(rows, SOURCE)
