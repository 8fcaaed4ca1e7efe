"""A cross-validation run's own files, beside its folds: its record, the resume decision, its results.

The paths and the checks that need only what is on disk live in :class:`coronet.layout.RunDir`; this module
adds what needs the training settings: the ``config.json`` record (settings, dataset hash, versions, machine),
which folds a resumed run keeps (shared with the other DDP processes), and the Table I accuracy per fold.
"""

from __future__ import annotations

import os
import platform

import numpy as np
import pandas as pd
import torch

from ..data.cohorts import table1_rows
from ..layout import DatasetDir, RunDir
from ..versions import package_versions
from .module import resolve_precision
from .profiles import RUNTIME_FIELDS, TrainConfig

#: How rank 0 tells the other DDP processes (which run the same command) the folds it keeps.
FINISHED_FOLDS_ENV = "CORONET_FINISHED_FOLDS"


def run_record(
    dataset: DatasetDir, config: TrainConfig, profile: str, folds: list[int], extra: dict | None = None
) -> dict:
    """The run's ``config.json``: settings, resolved precision, folds, dataset (path and hash), versions, machine."""
    return {
        "profile": profile,
        "train": config.to_dict(),
        "precision_resolved": resolve_precision(config),
        "folds": folds,
        "dataset": {"path": str(dataset.path.resolve()), "manifest_sha256": dataset.manifest_sha256()},
        "versions": {
            **package_versions(),
            "torch_build": torch.__version__,  # with its CUDA tag (importlib.metadata gives the release only)
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        **(extra or {}),
    }


def start_run(
    run: RunDir,
    dataset: DatasetDir,
    manifest: pd.DataFrame,
    config: TrainConfig,
    profile: str,
    folds: list[int],
    extra: dict | None = None,
) -> None:
    """Write the run's record, its manifest and copies of the dataset's records. A run already there is resumed
    only with the same recipe and data (:meth:`coronet.layout.RunDir.write_config`); how it runs may change."""
    run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(run_record(dataset, config, profile, folds, extra), RUNTIME_FIELDS)
    run.write_manifest(manifest)
    run.keep_dataset_records(dataset)


def finished_folds(run: RunDir, folds: list[int], resume: bool, rank: int) -> set[int]:
    """The folds a resumed run keeps (none without ``resume``).

    Rank 0 decides from the run directory and hands its decision to the other processes in the environment
    (:data:`FINISHED_FOLDS_ENV`), which the launcher gives them; they never read files rank 0 is writing.
    """
    if rank != 0:
        return {int(f) for f in os.environ.get(FINISHED_FOLDS_ENV, "").split(",") if f}
    finished = run.finished_folds(folds) if resume else set()
    os.environ[FINISHED_FOLDS_ENV] = ",".join(map(str, sorted(finished)))
    return finished


def table1_accuracy(predictions: pd.DataFrame) -> float:
    """Accuracy on the Table I rows (extra cohorts, which may carry partial labels, left out)."""
    rows = table1_rows(predictions)
    return float((rows.pred == rows.label).mean())


def fold_summary(predictions: pd.DataFrame) -> str:
    """Markdown: accuracy per fold and the mean, from per-image predictions (Table I rows only)."""
    predictions = table1_rows(predictions)
    lines = ["| fold | images | accuracy (%) |", "|---|---|---|"]
    accuracies = []
    for fold, rows in predictions.groupby("fold"):
        accuracy = float((rows.pred == rows.label).mean())
        accuracies.append(accuracy)
        lines.append(f"| {fold} | {len(rows)} | {100 * accuracy:.2f} |")
    overall = float((predictions.pred == predictions.label).mean())
    lines.append(f"| mean of folds | {len(predictions)} | {100 * float(np.mean(accuracies)):.2f} |")
    lines.append(f"| pooled | {len(predictions)} | {100 * overall:.2f} |")
    return "\n".join(lines) + "\n"


def finish_run(run: RunDir, fold_predictions: list[pd.DataFrame]) -> tuple[pd.DataFrame, str]:
    """Write the combined ``predictions.csv`` and ``results.md``; return both."""
    combined = pd.concat(fold_predictions, ignore_index=True)
    summary = fold_summary(combined)
    run.write_results(combined, summary)
    return combined, summary


__all__ = [
    "FINISHED_FOLDS_ENV",
    "finish_run",
    "finished_folds",
    "fold_summary",
    "run_record",
    "start_run",
    "table1_accuracy",
]
