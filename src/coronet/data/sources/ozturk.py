"""Ozturk et al.'s dataset-2: ``{Covid-19, No_findings, Pneumonia}/``.

No_findings and Pneumonia are ChestX-ray8 films named ``<patient>_<follow-up>``,
so the patient id is the part before the underscore. The Covid-19 files are
copies from the Cohen collection under their original names, with no patient
metadata: given the Cohen collection (``cohen_root``), a file whose name is a Cohen
film's gets that film's patient (``cohen:<patientid>``), so one patient's films stay
in one fold; any other is treated as its own patient (near-duplicate detection in
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


def read_ozturk(root: str | Path, cohen_root: str | Path | None = None) -> pd.DataFrame:
    """Read Ozturk et al.'s ``X-Ray Image DataSet`` folder at ``root`` (Cohen patients from ``cohen_root``)."""
    from .cohen import cohen_patients_by_stem

    root = require_dir(Path(root), "Ozturk dataset-2 folder")
    cohen = cohen_patients_by_stem(cohen_root) if cohen_root else {}
    rows = []
    for folder, label in FOLDERS.items():
        directory = require_dir(root / folder, f"class folder {folder!r}")
        for path in list_images(directory):
            match = _CHESTXRAY8.match(path.stem)
            patient = f"{SOURCE}:{match.group(1) if match else path.stem}"
            if label == "covid" and path.stem in cohen:
                patient = cohen[path.stem]
            rows.append(
                {
                    "path": str(path),
                    "label": label,
                    "source": SOURCE,
                    "patient_id": patient,
                    "view": pd.NA,
                    "split": pd.NA,
                }
            )
    return make_table(rows, SOURCE)
