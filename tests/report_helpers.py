"""Synthetic predictions tables with known answers, for the tests of the report and its page."""

from __future__ import annotations

import numpy as np
import pandas as pd

PAPER4 = ["covid", "normal", "bacterial", "viral"]


def make_predictions(labels, preds, classes, folds, patients=None, confidence=0.7):
    """A predictions frame whose probabilities put ``confidence`` on the predicted class."""
    k = len(classes)
    rows = []
    for i, (y, p, f) in enumerate(zip(labels, preds, folds)):
        row = {
            "path": f"img{i}.png",
            "patient_id": patients[i] if patients is not None else f"p{i}",
            "fold": f,
            "label": y,
        }
        for c in classes:
            row[f"prob_{c}"] = confidence if c == p else (1 - confidence) / (k - 1)
        row["pred"] = p
        rows.append(row)
    return pd.DataFrame(rows)


def random_predictions(n, classes, seed, folds=2, patients=None, accuracy_target=0.7):
    rng = np.random.default_rng(seed)
    labels = rng.choice(classes, size=n)
    wrong = rng.choice(classes, size=n)
    preds = np.where(rng.random(n) < accuracy_target, labels, wrong)
    probs = rng.dirichlet(np.ones(len(classes)), size=n)
    df = pd.DataFrame(
        {
            "path": [f"img{i}.png" for i in range(n)],
            "patient_id": patients if patients is not None else [f"p{i // 2}" for i in range(n)],
            "fold": np.arange(n) % folds + 1,
            "label": labels,
        }
    )
    for j, c in enumerate(classes):
        df[f"prob_{c}"] = probs[:, j]
    # make the predicted class the argmax, as in a real run
    for i, p in enumerate(preds):
        col = f"prob_{p}"
        top = df.loc[i, [f"prob_{c}" for c in classes]].max()
        df.loc[i, col] = top + 0.5
    total = df[[f"prob_{c}" for c in classes]].sum(axis=1)
    for c in classes:
        df[f"prob_{c}"] /= total
    df["pred"] = preds
    return df
