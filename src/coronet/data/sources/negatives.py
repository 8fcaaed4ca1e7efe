"""Adult films without COVID-19 from the COVID-19 positives' own collections (``source-negatives/``).

Every Table I COVID-19 film comes from the ieee8023 collection and no negative film does, so a
model can learn that collection's look in place of the disease. These films are negatives from
the positives' own sources::

    source-negatives/cohen/{bacterial,viral,other}/ + metadata.csv   ieee8023 non-COVID frontal films
    source-negatives/actualmed/normal/ + metadata.csv                Actualmed "No finding" films

``metadata.csv`` gives each film's ``patientid`` and ``view``; the class is the film's folder.
``other`` is "not COVID-19" without a normal/bacterial/viral label (generic pneumonia,
Pneumocystis, lipoid pneumonia, non-COVID ARDS): a partial label (:data:`coronet.tasks.PARTIAL_LABELS`).
The ``source`` column names the collection (``cohen``, ``actualmed``), so a film is reported
beside the same collection's COVID-19 films; ieee8023 patient ids share the ``cohen:`` prefix of
:mod:`coronet.data.sources.cohen` (the collection's ``patientid`` numbering is global).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .base import make_table, require_dir

SOURCE = "source-negatives"
#: collection folder -> (the ``source`` its rows carry, the class folders it holds)
COLLECTIONS = {"cohen": ("cohen", ("bacterial", "viral", "other")), "actualmed": ("actualmed", ("normal",))}


def read_source_negatives(root: str | Path) -> pd.DataFrame:
    """Read ``source-negatives/`` at ``root``: one row per film of each collection's class folders.

    A film in a class folder but not in its collection's ``metadata.csv`` is its own patient.
    """
    root = require_dir(Path(root), "source-negatives folder")
    rows = []
    for folder, (source, classes) in COLLECTIONS.items():
        collection = require_dir(root / folder, f"collection folder {folder!r}")
        metadata = pd.read_csv(collection / "metadata.csv", dtype=str, keep_default_na=False)
        # cohen's filename is "<class>/<name>.jpg", actualmed's the bare name inside normal/
        by_name = {Path(r["filename"]).name: r for r in metadata.to_dict("records")}
        for label in classes:
            directory = require_dir(collection / label, f"class folder {folder}/{label}")
            for path in sorted(directory.iterdir()):
                if not path.is_file() or path.name.startswith("."):
                    continue
                record = by_name.get(path.name, {})
                patient = (record.get("patientid") or "").strip() or path.stem
                rows.append(
                    {
                        "path": str(path),
                        "label": label,
                        "source": source,
                        "patient_id": f"{source}:{patient}",
                        "view": (record.get("view") or "").strip() or pd.NA,
                        "split": pd.NA,
                        "finding": record.get("finding", ""),
                    }
                )
    return make_table(rows, SOURCE)
