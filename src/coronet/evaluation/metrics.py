"""Pure metrics of per-image predictions: confusion matrices, the paper's per-class and per-fold figures,
calibration, ROC AUC, the COVID-19 operating point, and the statistics the bootstrap resamples.

Input is a predictions table (:func:`coronet.layout.read_predictions`): ``label``, ``pred``, ``fold``,
``prob_<class>``. Precision, recall and F1 follow scikit-learn (0 where undefined); specificity, which
scikit-learn lacks, is TN / (TN + FP) from the one-vs-rest confusion matrix. Figures in percent where
the paper's tables are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from ..layout import classes_of, prob_column
from ..tasks import Task

METRICS = ["precision", "recall", "specificity", "f1"]
COVID = "covid"
COVID_TARGET_RECALL = 0.98
ECE_BINS = 15


def confusion(labels, preds, classes) -> np.ndarray:
    """Confusion matrix, rows true class, columns predicted class, in ``classes`` order."""
    return confusion_matrix(list(labels), list(preds), labels=list(classes))


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, float), np.asarray(den, float)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_metrics(cm, classes) -> pd.DataFrame:
    """One-vs-rest precision, recall, specificity, F1 and support per class (0 where undefined)."""
    cm = np.asarray(cm, dtype=float)
    tp = np.diag(cm)
    fp = cm.sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    tn = cm.sum() - tp - fp - fn
    precision = _safe_div(tp, tp + fp)
    recall = _safe_div(tp, tp + fn)
    return pd.DataFrame(
        {
            "precision": precision,
            "recall": recall,
            "specificity": _safe_div(tn, tn + fp),
            "f1": _safe_div(2 * precision * recall, precision + recall),
            "support": cm.sum(axis=1).astype(int),
        },
        index=pd.Index(list(classes), name="class"),
    )


def _accuracy_of_cm(cm) -> float:
    cm = np.asarray(cm)
    return float(np.trace(cm) / cm.sum()) if cm.sum() else 0.0


def folds_of(predictions: pd.DataFrame) -> list:
    return sorted(predictions["fold"].unique())


def fold_confusion(predictions: pd.DataFrame, classes, fold) -> np.ndarray:
    part = predictions[predictions["fold"] == fold]
    return confusion(part["label"], part["pred"], classes)


def expected_calibration_error(predictions: pd.DataFrame, classes=None, bins: int = ECE_BINS) -> float:
    """ECE of the max probability: sum over equal-width bins of |accuracy - confidence| * share."""
    conf, correct = confidence(predictions, classes)
    if len(conf) == 0:
        return float("nan")
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # bins (lo, hi], 0 in the first
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += abs(correct[mask].mean() - conf[mask].mean()) * mask.sum() / len(conf)
    return float(ece)


def confidence(predictions: pd.DataFrame, classes=None) -> tuple[np.ndarray, np.ndarray]:
    classes = list(classes or classes_of(predictions))
    probs = predictions[[prob_column(c) for c in classes]].to_numpy(float)
    conf = probs.max(axis=1)
    correct = (predictions["pred"].to_numpy() == predictions["label"].to_numpy()).astype(float)
    return conf, correct


def task_row(table3: pd.DataFrame, task: Task | None) -> pd.DataFrame:
    """The paper's Table V layout: one row for the task (its Table V name), the fold means of Table III."""
    row = table3.loc[["mean"], ["precision", "recall", "specificity", "f1", "accuracy"]].copy()
    row.index = pd.Index([task.title if task else "task"], name="task")
    return row


def fold_table(predictions: pd.DataFrame, classes) -> pd.DataFrame:
    """Table III: per fold the class-averaged P/R/Spec/F1 and the accuracy (percent), plus a 'mean' row.

    An ``ece`` column (expected calibration error, percent) follows the paper's columns.
    """
    rows = {}
    for fold in folds_of(predictions):
        cm = fold_confusion(predictions, classes, fold)
        row = per_class_metrics(cm, classes)[METRICS].mean(axis=0) * 100
        row["accuracy"] = _accuracy_of_cm(cm) * 100
        row["ece"] = expected_calibration_error(predictions[predictions["fold"] == fold], classes) * 100
        rows[str(fold)] = row
    table = pd.DataFrame(rows).T
    table.loc["mean"] = table.mean(axis=0)
    table.index.name = "fold"
    return table[METRICS + ["accuracy", "ece"]]


def class_table(predictions: pd.DataFrame, classes) -> pd.DataFrame:
    """Table IV: per class the mean over folds of precision, recall, specificity and F1 (percent)."""
    per_fold = [
        per_class_metrics(fold_confusion(predictions, classes, f), classes)[METRICS] for f in folds_of(predictions)
    ]
    table = sum(per_fold) / len(per_fold) * 100
    table.index.name = "class"
    return table


def accuracy(df: pd.DataFrame) -> float:
    """Fraction of images whose prediction equals the label."""
    return float((df["pred"] == df["label"]).mean()) if len(df) else float("nan")


def recall_of(cls: str) -> Callable[[pd.DataFrame], float]:
    """Statistic: recall of ``cls`` (nan when the class is absent)."""

    def stat(df):
        true = df["label"] == cls
        return float((df.loc[true, "pred"] == cls).mean()) if true.any() else float("nan")

    return stat


def precision_of(cls: str) -> Callable[[pd.DataFrame], float]:
    """Statistic: precision of ``cls`` (nan when never predicted)."""

    def stat(df):
        called = df["pred"] == cls
        return float((df.loc[called, "label"] == cls).mean()) if called.any() else float("nan")

    return stat


def false_covid_rate_of(label: str) -> Callable[[pd.DataFrame], float]:
    """Statistic: the share of ``label`` films (not COVID-19) called COVID-19 (nan when the label is absent)."""

    def stat(df):
        rows = df["label"] == label
        return float((df.loc[rows, "pred"] == COVID).mean()) if rows.any() else float("nan")

    return stat


def normal_vs_pneumonia(df: pd.DataFrame) -> float:
    """Statistic: normal films called normal and pneumonia films called any pneumonia class, among both."""
    pneumonia = ("bacterial", "viral", "pneumonia")
    normal, sick = df["label"] == "normal", df["label"].isin(pneumonia)
    right = (normal & (df["pred"] == "normal")) | (sick & df["pred"].isin(pneumonia))
    return float(right[normal | sick].mean()) if (normal | sick).any() else float("nan")


def roc_aucs(predictions: pd.DataFrame, classes) -> dict:
    """One-vs-rest ROC AUC per class; classes with a single label value present are skipped."""
    out = {}
    for c in classes:
        y = (predictions["label"] == c).to_numpy()
        if 0 < y.sum() < len(y):
            out[c] = float(roc_auc_score(y, predictions[prob_column(c)]))
    return out


def covid_operating_point(predictions: pd.DataFrame, target: float = COVID_TARGET_RECALL) -> dict | None:
    """Highest threshold on ``prob_covid`` with COVID recall >= ``target``, and the specificity there."""
    y = (predictions["label"] == COVID).to_numpy()
    if not 0 < y.sum() < len(y):
        return None
    fpr, tpr, thr = roc_curve(y, predictions[prob_column(COVID)], drop_intermediate=False)
    i = int(np.argmax(tpr >= target))  # thresholds decrease, so the first hit is the highest
    return {
        "threshold": float(thr[i]),
        "recall": float(tpr[i]),
        "specificity": float(1 - fpr[i]),
        "target_recall": target,
    }


__all__ = [
    "COVID",
    "COVID_TARGET_RECALL",
    "ECE_BINS",
    "METRICS",
    "accuracy",
    "class_table",
    "classes_of",
    "confusion",
    "confidence",
    "covid_operating_point",
    "expected_calibration_error",
    "false_covid_rate_of",
    "fold_confusion",
    "fold_table",
    "folds_of",
    "normal_vs_pneumonia",
    "per_class_metrics",
    "precision_of",
    "recall_of",
    "roc_aucs",
    "task_row",
]
