"""The on-disk contract: what a prepared dataset directory and a run directory hold, and the predictions table.

Every module finds its files through these names, so the layout is written down once::

    DATASET/manifest.csv             one row per image: path, label, source, patient_id, fold, cache_index, ...
    DATASET/images-<size>.npy        the decoded, resized uint8 films (row = cache_index), memory-mappable
    DATASET/signatures.npy           edge signatures (overlap checks against other datasets)
    DATASET/prepare.json, summary.md, duplicates.csv, skipped.csv

    RUN/config.json                  resolved settings, dataset hash, versions, machine
    RUN/manifest.csv                 the dataset with its folds (+ dataset-summary.md, ...)
    RUN/predictions.csv              path, patient_id, fold, label, prob_<class>..., pred, ...
    RUN/results.md                   accuracy per fold
    RUN/report/                      coronet report
    RUN/audit/                       coronet audit
    RUN/adult-test/predictions.csv   the adult-negative test
    RUN/fold-K/metrics.csv, curves.png, predictions.csv, checkpoints/last.ckpt, model/
    MODEL/model.safetensors + MODEL/model.json   (coronet.models.modeldir)
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

MANIFEST = "manifest.csv"
CACHE_TEMPLATE = "images-{size}.npy"
SIGNATURES = "signatures.npy"
PREPARE_RECORD = "prepare.json"
CONFIG = "config.json"
PREDICTIONS = "predictions.csv"
RESULTS = "results.md"
METRICS = "metrics.csv"
CURVES = "curves.png"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
MODEL_DIR = "model"
MODEL_CARD = "model.json"
MODEL_WEIGHTS = "model.safetensors"
ADULT_TEST = "adult-test"
AUDIT = "audit"
REPORT = "report"
PROB_PREFIX = "prob_"
#: The columns every predictions table has, before one ``prob_<class>`` per class.
PREDICTION_COLUMNS = ("path", "patient_id", "fold", "label")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) to write to, renamed onto ``path`` when the block ends:
    a reader never sees a half-written file. If the block raises, the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fold_dir(run: str | os.PathLike, fold: int) -> Path:
    """Fold ``fold``'s directory of a run."""
    return Path(run) / f"fold-{fold}"


def fold_model(run: str | os.PathLike, fold: int) -> Path:
    """Fold ``fold``'s model directory of a run."""
    return fold_dir(run, fold) / MODEL_DIR


def prob_column(cls: str) -> str:
    """The predictions column holding the probability of class ``cls``."""
    return PROB_PREFIX + cls


def prob_columns(table: pd.DataFrame) -> list[str]:
    """The ``prob_<class>`` columns of a predictions table, in order."""
    return [c for c in table.columns if str(c).startswith(PROB_PREFIX)]


def classes_of(table: pd.DataFrame) -> list[str]:
    """The classes of a predictions table, from its ``prob_<class>`` columns, in order."""
    return [c[len(PROB_PREFIX) :] for c in prob_columns(table)]


@dataclass(frozen=True)
class DatasetDir:
    """A prepared dataset (``coronet data prepare``)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    def cache(self, size: int) -> Path:
        return self.path / CACHE_TEMPLATE.format(size=size)

    @property
    def signatures(self) -> Path:
        return self.path / SIGNATURES

    @property
    def record(self) -> Path:
        return self.path / PREPARE_RECORD

    def exists(self) -> bool:
        return self.manifest.is_file()

    def read_manifest(self) -> pd.DataFrame:
        if not self.manifest.is_file():
            raise FileNotFoundError(f"{self.path}: not a prepared dataset (no {MANIFEST}; run `coronet data prepare`)")
        return pd.read_csv(self.manifest)


@dataclass(frozen=True)
class FoldDir:
    """One fold of a run: its training record, predictions and model."""

    path: Path

    @property
    def model(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    def finished(self) -> bool:
        """The fold has its model and predictions (a resumed run keeps it)."""
        return (self.model / MODEL_CARD).is_file() and self.predictions.is_file()


@dataclass(frozen=True)
class RunDir:
    """A run: cross-validation, fine-tune, external evaluation."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def audit(self) -> Path:
        return self.path / AUDIT

    @property
    def adult_test(self) -> Path:
        return self.path / ADULT_TEST / PREDICTIONS

    def fold(self, k: int) -> FoldDir:
        return FoldDir(fold_dir(self.path, k))

    def read_config(self) -> dict:
        import json

        if not self.config.is_file():
            raise FileNotFoundError(f"{self.path}: not a run directory (no {CONFIG}; run `coronet cv` first)")
        return json.loads(self.config.read_text())


#: Columns a predictions table carries over from its rows where they have them.
CARRIED_COLUMNS = ("source", "relpath", "source_label", "cohort", "overlap", "overlap_kind")


def predictions_table(rows: pd.DataFrame, probabilities, classes, fold=None) -> pd.DataFrame:
    """The predictions table every writer writes: ``path, patient_id, fold, label``, one ``prob_<class>`` per class
    (rounded to 6 decimals), ``pred`` (the most probable class), then :data:`CARRIED_COLUMNS` found in ``rows``.

    rows: the films, in the order of ``probabilities`` ((N, len(classes)) array); fold: every row's fold
    (default: the rows' own ``fold`` column).
    """
    import numpy as np

    rows = rows.reset_index(drop=True)
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.shape != (len(rows), len(classes)):
        raise ValueError(f"{probabilities.shape} probabilities for {len(rows)} films and {len(classes)} classes")
    table = rows[["path", "patient_id"]].copy()
    table["fold"] = rows["fold"] if fold is None else fold
    table["label"] = rows["label"]
    for k, cls in enumerate(classes):
        table[prob_column(cls)] = probabilities[:, k].round(6)
    table["pred"] = [classes[k] for k in probabilities.argmax(axis=1)] if len(rows) else []
    for column in CARRIED_COLUMNS:
        if column in rows:
            table[column] = rows[column].to_numpy()
    return table


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """A ``predictions.csv`` checked for the documented columns (``path, patient_id, fold, label``, one
    ``prob_<class>`` per class); ``pred`` is derived from the probabilities when absent.

    A missing column is a one-line ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions file (run `coronet cv` or `coronet evaluate` first)")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable CSV ({' '.join(str(error).split())[:120]})") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in table]
    probabilities = prob_columns(table)
    if missing or not probabilities:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing + ([] if probabilities else ['prob_<class>']))}"
            f" (expected {', '.join(PREDICTION_COLUMNS)}, prob_<class>...)"
        )
    if "pred" not in table:
        table["pred"] = [c[len(PROB_PREFIX) :] for c in table[probabilities].idxmax(axis=1)]
    return table


__all__ = [
    "ADULT_TEST",
    "AUDIT",
    "CACHE_TEMPLATE",
    "CHECKPOINTS",
    "CONFIG",
    "CURVES",
    "DatasetDir",
    "FoldDir",
    "LAST_CHECKPOINT",
    "MANIFEST",
    "METRICS",
    "MODEL_CARD",
    "MODEL_DIR",
    "MODEL_WEIGHTS",
    "PREDICTIONS",
    "PREDICTION_COLUMNS",
    "PREPARE_RECORD",
    "PROB_PREFIX",
    "REPORT",
    "RESULTS",
    "RunDir",
    "SIGNATURES",
    "atomic_path",
    "classes_of",
    "fold_dir",
    "fold_model",
    "prob_column",
    "prob_columns",
    "predictions_table",
    "read_predictions",
]
