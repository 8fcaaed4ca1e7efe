"""ieee8023 covid-chestxray-dataset (Cohen et al.): ``metadata.csv`` + ``images/``.

Rows are kept when ``finding`` mentions COVID-19, ``modality`` is X-ray and the
``view`` is frontal (PA, AP, AP Supine by default). Patient ids come from
``patientid``; the collection holds up to 7 follow-up films per patient.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .base import make_table, require_dir

SOURCE = "cohen"
DEFAULT_VIEWS = ("PA", "AP", "AP Supine")


def read_cohen(root: str | Path, views: Iterable[str] = DEFAULT_VIEWS) -> pd.DataFrame:
    """Read the COVID-19 frontal X-rays of a covid-chestxray-dataset checkout at ``root``.

    Metadata rows whose image file is absent are skipped with one warning that counts them.
    """
    root = require_dir(Path(root), "covid-chestxray-dataset folder")
    metadata = pd.read_csv(root / "metadata.csv", dtype=str, keep_default_na=False)
    views = {v.strip() for v in views}
    keep = (
        metadata["finding"].str.contains("COVID-19", regex=False)
        & (metadata["modality"].str.strip() == "X-ray")
        & metadata["view"].str.strip().isin(views)
    )
    rows, missing = [], []
    for record in metadata[keep].to_dict("records"):
        folder = record.get("folder") or "images"
        path = root / folder / record["filename"]
        if not path.is_file():
            missing.append(record["filename"])
            continue
        rows.append(
            {
                "path": str(path),
                "label": "covid",
                "source": SOURCE,
                "patient_id": f"{SOURCE}:{record['patientid'].strip()}",
                "view": record["view"].strip(),
                "split": pd.NA,
                "finding": record["finding"],
            }
        )
    if missing:
        warnings.warn(
            f"{SOURCE}: {len(missing)} metadata rows have no image file (e.g. {missing[0]}); skipped", stacklevel=2
        )
    return make_table(rows, SOURCE)


def cohen_patients_by_stem(root: str | Path) -> dict[str, str]:
    """File stem (the current and the original file name's) -> ``cohen:<patientid>``, for every metadata row.

    Other collections (Ozturk et al.'s dataset-2) copied Cohen films under their original names;
    this finds the patient behind such a copy without decoding anything.
    """
    path = Path(root) / "metadata.csv"
    if not path.is_file():
        return {}
    metadata = pd.read_csv(path, dtype=str, keep_default_na=False)
    mapping: dict[str, str] = {}
    for record in metadata.to_dict("records"):
        patient = f"{SOURCE}:{record['patientid'].strip()}"
        for column in ("filename", "original_filename"):
            if record.get(column):
                mapping.setdefault(Path(record[column]).stem, patient)
    return mapping
