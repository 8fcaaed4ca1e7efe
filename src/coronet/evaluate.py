"""``coronet evaluate``: a trained model on any readable dataset, no training -- an external test.

The model's classes are mapped onto the dataset's labels explicitly
(:func:`coronet.tasks.default_class_map`, or ``--map MODEL_CLASS=DATA_LABEL``): a 4-class
model on dataset-2 answers "pneumonia" with P(bacterial) + P(viral). Images whose label
the mapped classes cannot express are left out and counted, never silently relabelled.

The run directory has the cross-validation layout, so ``coronet report`` works on it:
``predictions.csv`` (one "fold", 1), ``config.json`` (model, source, class map),
``skipped.csv`` (unreadable files, one line each) and a copy of the model card.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from . import __version__
from .predict import Failure, Predictor
from .sources import SOURCES, read_source, source_dir
from .tasks import default_class_map, mapped_labels, merge_probabilities


def source_root(data: str | os.PathLike, source: str) -> Path:
    """The folder to read ``source`` from: its usual place under the data directory ``data``, or ``data`` itself."""
    data = Path(data)
    if source in SOURCES and source_dir(source, data).is_dir():
        return source_dir(source, data)
    if not data.is_dir():
        raise FileNotFoundError(f"{data}: no such directory")
    return data


def evaluate(model_dir: str | os.PathLike, data: str | os.PathLike, source: str, out: str | os.PathLike,
             class_map: dict[str, str] | None = None, batch_size: int = 32, runtime: str = "torch",
             log=print) -> pd.DataFrame:
    """Predict every image of ``source`` under ``data`` with the model; write the run directory ``out``.

    Returns the per-image predictions (columns as in a cross-validation run's ``predictions.csv``).
    """
    out = Path(out)
    root = source_root(data, source)
    table = read_source(source, root)
    predictor = Predictor(model_dir, runtime=runtime)
    mapping = class_map or default_class_map(predictor.classes, table["label"])
    labels = mapped_labels(predictor.classes, mapping)
    outside = table[~table["label"].isin(labels)]
    if len(outside):
        log(f"left out {len(outside)} images whose labels the model's mapped classes {labels} cannot express: "
            + ", ".join(f"{k} {v}" for k, v in outside["label"].value_counts().items()))
    table = table[table["label"].isin(labels)].reset_index(drop=True)
    if table.empty:
        raise ValueError(f"{root}: no images with labels among {labels}")

    out.mkdir(parents=True, exist_ok=True)
    results = list(predictor.predict_files(table["path"], batch_size=batch_size))
    failures = [r for r in results if isinstance(r, Failure)]
    for failure in failures:
        log(f"skipped {failure}")
    pd.DataFrame([{"path": f.path, "problem": f.problem} for f in failures],
                 columns=["path", "problem"]).to_csv(out / "skipped.csv", index=False)
    ok = [k for k, r in enumerate(results) if not isinstance(r, Failure)]
    if not ok:
        raise ValueError(f"{root}: none of the {len(results)} images could be read")
    merged, _ = merge_probabilities([results[k].probabilities for k in ok], predictor.classes, mapping)
    rows = table.iloc[ok].reset_index(drop=True)
    predictions = rows[["path", "patient_id"]].copy()
    predictions["fold"] = 1
    predictions["label"] = rows["label"]
    for j, label in enumerate(labels):
        predictions[f"prob_{label}"] = merged[:, j].round(6)
    predictions["pred"] = [labels[j] for j in merged.argmax(axis=1)]
    predictions["source"] = rows["source"]
    predictions["relpath"] = [os.path.relpath(p, root) for p in rows["path"]]
    predictions.to_csv(out / "predictions.csv", index=False)

    shutil.copy2(predictor.model_dir / "model.json", out / "model.json")
    record = {"kind": "evaluate", "model": str(predictor.model_dir.resolve()), "model_name": predictor.card.get("name"),
              "weights_sha256": predictor.card.get("weights_sha256"), "source": source, "data": str(root.resolve()),
              "class_map": mapping, "labels": labels, "runtime": runtime, "images": len(predictions),
              "skipped": len(failures), "left_out": {k: int(v) for k, v in outside["label"].value_counts().items()},
              "coronet": __version__}
    (out / "config.json").write_text(json.dumps(record, indent=2) + "\n")
    accuracy = float((predictions["pred"] == predictions["label"]).mean())
    log(f"{len(predictions)} images, accuracy {accuracy:.4f}; {len(failures)} unreadable -> {out}")
    return predictions


__all__ = ["evaluate", "source_root"]
