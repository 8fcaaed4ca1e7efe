"""``coronet evaluate``: a trained model on any readable dataset, no training -- an external test.

The model's classes are mapped onto the dataset's labels explicitly
(:func:`coronet.tasks.default_class_map`, or ``--map MODEL_CLASS=DATA_LABEL``): a 4-class
model on dataset-2 answers "pneumonia" with P(bacterial) + P(viral). Images whose label
the mapped classes cannot express are left out and counted, never silently relabelled.

The run directory has the cross-validation layout, so ``coronet report`` works on it:
``predictions.csv`` (one "fold", 1), ``config.json`` (model, source, class map),
``skipped.csv`` (unreadable files, one line each) and a copy of the model card.

With ``training_dataset`` (the prepared dataset the model was trained on), films that are the
same film as a training film, or films of a patient with training films, are left out and
listed in ``overlap.csv`` -- an external test must not test on training data. Without it, a
model card that names its training data gets a warning saying how to check.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from ..data.cohorts import TABLE1, table1_rows
from ..data.sources import SOURCES, read_source, source_dir
from ..deploy.predict import Failure, Prediction, Predictor
from ..layout import MODEL_CARD, DatasetDir, RunDir, predictions_table
from ..tasks import PARTIAL_LABELS, default_class_map, mapped_labels, merge_probabilities

logger = logging.getLogger(__name__)

#: The ``cohort`` of an external evaluation's films whose label is partial (kept out of the accuracy tables).
PARTIAL_COHORT = "partial-label"


def _default_map(model_classes, labels: pd.Series) -> dict[str, str]:
    """:func:`coronet.tasks.default_class_map`, with the labels the model can only express as partial labels
    (e.g. "other": not COVID-19) set aside when the full map has no answer for them."""
    try:
        return default_class_map(model_classes, labels)
    except ValueError:
        partial = {x for x in set(labels) if x in PARTIAL_LABELS and PARTIAL_LABELS[x].allowed(model_classes)}
        if not partial or labels.isin(partial).all():
            raise
        return default_class_map(model_classes, labels[~labels.isin(partial)])


def source_root(data: str | os.PathLike, source: str) -> Path:
    """The folder to read ``source`` from: its usual place under the data directory ``data``, or ``data`` itself."""
    data = Path(data)
    if source in SOURCES and source_dir(source, data).is_dir():
        return source_dir(source, data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such directory")
    return data


def evaluate(
    model_dir: str | os.PathLike,
    data: str | os.PathLike,
    source: str,
    out: str | os.PathLike,
    class_map: dict[str, str] | None = None,
    batch_size: int = 32,
    runtime: str = "torch",
    training_dataset: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """Predict every image of ``source`` under ``data`` with the model; write the run directory ``out``.

    Returns the per-image predictions (columns as in a cross-validation run's ``predictions.csv``).
    """
    out = Path(out)
    run = RunDir(out)
    root = source_root(data, source)
    predictor = Predictor(model_dir, runtime=runtime)
    table = read_source(source, root)
    mapping = class_map or _default_map(predictor.classes, table["label"])
    table, labels, partial, outside = _expressible_rows(table, predictor, mapping, root)
    overlap = None
    if training_dataset is not None:
        table, overlap = _without_training_overlap(table, Path(training_dataset), predictor.card, root)
    else:
        _warn_of_possible_overlap(predictor.card)

    out.mkdir(parents=True, exist_ok=True)
    if overlap is not None:
        overlap.to_csv(run.overlap, index=False)
    predictions, failures = _predict_rows(predictor, table, mapping, labels, partial, root, run, batch_size)
    shutil.copy2(predictor.model_dir / MODEL_CARD, run.model_card)
    record = {
        "kind": "evaluate",
        "model": str(predictor.model_dir.resolve()),
        "model_name": predictor.card.get("name"),
        "weights_sha256": predictor.card.get("weights_sha256"),
        "source": source,
        "data": str(root.resolve()),
        "class_map": mapping,
        "labels": labels,
        "runtime": runtime,
        "images": len(predictions),
        "training_dataset": str(Path(training_dataset).resolve()) if training_dataset else None,
        "left_out_overlap": 0 if overlap is None else int(overlap["path"].nunique()),
        "skipped": failures,
        "left_out": {k: int(v) for k, v in outside["label"].value_counts().items()},
        "coronet": __version__,
    }
    run.config.write_text(json.dumps(record, indent=2) + "\n")
    main = table1_rows(predictions)  # films with a partial label have no single right class
    accuracy = float((main["pred"] == main["label"]).mean())
    logger.info(f"{len(predictions)} images, accuracy {accuracy:.4f}; {failures} unreadable -> {out}")
    return predictions


def _expressible_rows(table: pd.DataFrame, predictor: Predictor, mapping: dict, root: Path):
    """(rows whose labels the mapped classes can express, the mapped labels, the partial labels kept, the rows
    left out). Partial labels the mapped classes can express (ieee8023's "other": not COVID-19) are kept, apart."""
    labels = mapped_labels(predictor.classes, mapping)
    partial = {
        label
        for label in set(table["label"]) - set(labels)
        if label in PARTIAL_LABELS and PARTIAL_LABELS[label].allowed(labels)
    }
    outside = table[~table["label"].isin([*labels, *partial])]
    if len(outside):
        logger.info(
            f"left out {len(outside)} images whose labels the model's mapped classes {labels} cannot express: "
            + ", ".join(f"{k} {v}" for k, v in outside["label"].value_counts().items())
        )
    table = table[table["label"].isin([*labels, *partial])].reset_index(drop=True)
    if table.empty:
        raise ValueError(f"{root}: no images with labels among {labels}")
    return table, labels, partial, outside


def _without_training_overlap(table: pd.DataFrame, training_dataset: Path, card: dict, root: Path):
    """(the rows that are neither a training film nor a training patient's, the overlap found)."""
    training = card.get("training") or {}
    overlap = training_overlap(table, training_dataset)
    if training.get("dataset_sha256") and _dataset_hash(training_dataset) != training["dataset_sha256"]:
        logger.warning(
            f"warning: {training_dataset} is not the dataset this model's card names "
            f"(manifest SHA-256 {training['dataset_sha256'][:12]}...); the overlap is with it all the same"
        )
    left = table["path"].isin(set(overlap["path"]))
    counts = overlap.drop_duplicates("path")["kind"].value_counts()
    logger.info(
        f"left out {int(left.sum())} of {len(table)} images that overlap the training data "
        f"({counts.get('film', 0)} the same film, {counts.get('patient', 0)} a training patient's film)"
    )
    table = table[~left].reset_index(drop=True)
    if table.empty:
        raise ValueError(f"{root}: every image overlaps the training data")
    return table, overlap


def _warn_of_possible_overlap(card: dict) -> None:
    training = card.get("training") or {}
    if training.get("dataset_path") or training.get("dataset_sha256"):
        where = training.get("dataset_path") or "its training dataset"
        logger.warning(
            f"warning: this model was trained on {where} (manifest SHA-256 "
            f"{str(training.get('dataset_sha256'))[:12]}...); if these films may overlap it, pass "
            "--training-dataset DIR to leave out the same films and patients"
        )


def _predict_rows(predictor, table, mapping, labels, partial, root: Path, run: RunDir, batch_size: int):
    """Predict the rows' films; write ``predictions.csv`` (probabilities merged to the task's classes) and
    ``skipped.csv``. Returns (the predictions, how many films could not be read)."""
    results = list(predictor.predict_files(table["path"], batch_size=batch_size))
    failures = [r for r in results if isinstance(r, Failure)]
    for failure in failures:
        logger.info(f"skipped {failure}")
    pd.DataFrame([{"path": f.path, "problem": f.problem} for f in failures], columns=["path", "problem"]).to_csv(
        run.skipped, index=False
    )
    ok = [k for k, r in enumerate(results) if not isinstance(r, Failure)]
    if not ok:
        raise ValueError(f"{root}: none of the {len(results)} images could be read")
    predicted = [r for r in results if isinstance(r, Prediction)]
    merged, _ = merge_probabilities(np.array([r.probabilities for r in predicted]), predictor.classes, mapping)
    rows = table.iloc[ok].reset_index(drop=True)
    predictions = predictions_table(rows, merged, labels, fold=1)
    if partial:  # reported apart from the accuracy tables, in the per-source table and a section of their own
        predictions["cohort"] = np.where(rows["label"].isin(partial), PARTIAL_COHORT, TABLE1)
    predictions["relpath"] = [os.path.relpath(p, root) for p in rows["path"]]
    predictions.to_csv(run.predictions, index=False)
    return predictions, len(failures)


def _dataset_hash(dataset: Path) -> str | None:
    prepared = DatasetDir(dataset)
    return prepared.manifest_sha256() if prepared.exists() else None


def training_overlap(table: pd.DataFrame, training_dataset: Path, workers: int = 2) -> pd.DataFrame:
    """Rows of ``table`` that are a training film (pHash + edge correlation) or a film of a training patient.

    Columns as :func:`coronet.data.overlap.overlap_table` plus ``kind`` (``film`` or ``patient``).
    """
    from ..data.overlap import OVERLAP_COLUMNS, dataset_fingerprints, file_fingerprints, overlap_table

    if not DatasetDir(training_dataset).exists():
        raise FileNotFoundError(f"{training_dataset}: not a prepared dataset (no manifest.csv)")
    reference = dataset_fingerprints(training_dataset)
    films = overlap_table(file_fingerprints(table, workers), reference).assign(kind="film")
    patients = set(reference[0]["patient_id"])
    same_patient = table[table["patient_id"].isin(patients) & ~table["path"].isin(set(films["path"]))]
    by_patient = pd.DataFrame(
        {
            "path": same_patient["path"],
            "label": same_patient["label"],
            "reference_patient_id": same_patient["patient_id"],
            "kind": "patient",
        }
    )
    return pd.concat([films, by_patient], ignore_index=True).reindex(columns=[*OVERLAP_COLUMNS, "kind"])


__all__ = ["evaluate", "source_root", "training_overlap"]
