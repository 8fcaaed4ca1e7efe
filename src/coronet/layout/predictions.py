"""The predictions table every writer writes and every reader checks.

``path, patient_id, fold, label``, one ``prob_<class>`` per class, ``pred``, then the columns carried over from
the rows."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

PROB_PREFIX = "prob_"
#: The columns every predictions table has, before one ``prob_<class>`` per class.
PREDICTION_COLUMNS = ("path", "patient_id", "fold", "label")
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


def prob_column(cls: str) -> str:
    """The predictions column holding the probability of class ``cls``."""
    return PROB_PREFIX + cls


def prob_columns(table: pd.DataFrame) -> list[str]:
    """The ``prob_<class>`` columns of a predictions table, in order."""
    return [c for c in table.columns if str(c).startswith(PROB_PREFIX)]


def classes_of(table: pd.DataFrame) -> list[str]:
    """The classes of a predictions table, from its ``prob_<class>`` columns, in order."""
    return [c[len(PROB_PREFIX) :] for c in prob_columns(table)]
