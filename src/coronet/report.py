"""Evaluation report for a cross-validation run: the paper's tables, intervals and figures.

Input is a run directory holding ``predictions.csv`` (columns ``path, patient_id, fold, label``,
one ``prob_<class>`` column per class in class order, ``pred``, maybe more) and optionally
``fold-K/metrics.csv`` and ``fold-K/curves.png``.  :func:`write_report` writes into
``RUN_DIR/report/``:

* ``table3.csv`` / ``table4.csv`` -- the paper's Table III (per fold, macro P/R/Spec/F1 and accuracy)
  and Table IV (per class, mean over folds), in percent, with the paper's values and our difference
  beside ours when the run's classes are the paper's four;
* ``table5.csv`` -- the paper's Table V row for the run's task (4-class, 3-class, binary; recognised
  from the class names, see ``coronet.tasks``), with the paper's row beside it;
* ``table6.csv`` -- for a dataset-2 3-class run (``config.json`` says ``"paper_table": "table6"``),
  Table IV's per-class figures and the accuracy beside the paper's Table VI;
* ``ci.csv`` -- 95 % bootstrap intervals (patients resampled, all their images come along) for the
  accuracy and each class's recall and precision;
* ``auc.csv`` -- one-vs-rest ROC AUC per class; ``summary.json`` -- the returned summary;
* ``confusion-fold-K.png`` per fold, ``confusion-pooled.png``, ``roc.png``, ``calibration.png``,
  ``samples.png`` (the paper's Fig. 8: validation images with true label and probabilities; drawn
  from the ``path`` column, so only where the images are still readable);
* ``report.md`` and ``report.html`` (one self-contained page, figures embedded as data URIs).

Precision, recall and F1 come from scikit-learn's definitions (0 where undefined); specificity,
which scikit-learn lacks, is TN / (TN + FP) from the one-vs-rest confusion matrix.

Research software, not a medical device.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from . import tasks
from .prepare import split_cohorts
from .tasks import PAPER_NAMES, TASKS

#: The paper's reported numbers (Khan et al. 2020, CoroNet), in percent.
PAPER = {
    "table3": {  # fold -> precision, recall, specificity, f1, accuracy
        "1": {"precision": 88.0, "recall": 87.7, "specificity": 95.7, "f1": 87.6, "accuracy": 87.3},
        "2": {"precision": 90.8, "recall": 90.7, "specificity": 96.7, "f1": 90.7, "accuracy": 90.0},
        "3": {"precision": 88.9, "recall": 89.0, "specificity": 96.2, "f1": 88.9, "accuracy": 89.1},
        "4": {"precision": 92.5, "recall": 92.2, "specificity": 97.3, "f1": 92.1, "accuracy": 92.26},
        "mean": {"precision": 90.0, "recall": 89.92, "specificity": 96.4, "f1": 89.8, "accuracy": 89.6},
    },
    "table4": {  # class -> precision, recall, specificity, f1
        "covid": {"precision": 93.17, "recall": 98.25, "specificity": 97.9, "f1": 95.61},
        "normal": {"precision": 95.25, "recall": 93.5, "specificity": 98.1, "f1": 94.3},
        "bacterial": {"precision": 86.85, "recall": 85.9, "specificity": 95.0, "f1": 86.3},
        "viral": {"precision": 84.1, "recall": 82.1, "specificity": 94.8, "f1": 83.1},
    },
    "table5": {  # task -> fold-mean macro precision, recall, specificity, f1, accuracy
        "4-class": {"precision": 90.0, "recall": 89.92, "specificity": 96.4, "f1": 89.8, "accuracy": 89.6},
        "3-class": {"precision": 95.0, "recall": 96.9, "specificity": 97.5, "f1": 95.6, "accuracy": 95.0},
        "binary": {"precision": 98.3, "recall": 99.3, "specificity": 98.6, "f1": 98.5, "accuracy": 99.0},
    },
    "table6": {  # dataset-2 after fine-tuning: class -> precision, recall, specificity, f1; plus accuracy
        "covid": {"precision": 97.0, "recall": 89.0, "specificity": 99.6, "f1": 93.0},
        "normal": {"precision": 92.0, "recall": 85.0, "specificity": 97.7, "f1": 89.0},
        "pneumonia": {"precision": 87.0, "recall": 95.0, "specificity": 88.7, "f1": 91.0},
        "accuracy": 90.21,
    },
}
PAPER_CLASSES = list(TASKS["4class"])
METRICS = ["precision", "recall", "specificity", "f1"]
COVID = "covid"
COVID_TARGET_RECALL = 0.98
ECE_BINS = 15
DISCLAIMER = "Research software, not a medical device."


# --------------------------------------------------------------------------- metrics


PREDICTION_COLUMNS = ("path", "patient_id", "fold", "label")


def read_predictions(path) -> pd.DataFrame:
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
    probabilities = [c for c in table.columns if c.startswith("prob_")]
    if missing or not probabilities:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing + ([] if probabilities else ['prob_<class>']))}"
                         f" (expected {', '.join(PREDICTION_COLUMNS)}, prob_<class>...)")
    if "pred" not in table:
        table["pred"] = [c[len("prob_"):] for c in table[probabilities].idxmax(axis=1)]
    return table


def classes_of(predictions: pd.DataFrame) -> list[str]:
    """Class names: the ``prob_`` column suffixes, in column order."""
    return [c[len("prob_"):] for c in predictions.columns if c.startswith("prob_")]


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


def _folds(predictions: pd.DataFrame) -> list:
    return sorted(predictions["fold"].unique())


def _fold_cm(predictions: pd.DataFrame, classes, fold) -> np.ndarray:
    part = predictions[predictions["fold"] == fold]
    return confusion(part["label"], part["pred"], classes)


def expected_calibration_error(predictions: pd.DataFrame, classes=None, bins: int = ECE_BINS) -> float:
    """ECE of the max probability: sum over equal-width bins of |accuracy - confidence| * share."""
    conf, correct = _confidence(predictions, classes)
    if len(conf) == 0:
        return float("nan")
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # bins (lo, hi], 0 in the first
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += abs(correct[mask].mean() - conf[mask].mean()) * mask.sum() / len(conf)
    return float(ece)


def _confidence(predictions: pd.DataFrame, classes=None) -> tuple[np.ndarray, np.ndarray]:
    classes = list(classes or classes_of(predictions))
    probs = predictions[[f"prob_{c}" for c in classes]].to_numpy(float)
    conf = probs.max(axis=1)
    correct = (predictions["pred"].to_numpy() == predictions["label"].to_numpy()).astype(float)
    return conf, correct


def task_of(classes) -> str | None:
    """The paper's name (Table V row) of the task whose label set is ``classes``, or None."""
    return PAPER_NAMES.get(tasks.task_of(classes))


def task_row(table3: pd.DataFrame, task: str | None) -> pd.DataFrame:
    """The paper's Table V layout: one row for the task, the fold means of Table III."""
    row = table3.loc[["mean"], ["precision", "recall", "specificity", "f1", "accuracy"]].copy()
    row.index = pd.Index([task or "task"], name="task")
    return row


def fold_table(predictions: pd.DataFrame, classes) -> pd.DataFrame:
    """Table III: per fold the class-averaged P/R/Spec/F1 and the accuracy (percent), plus a 'mean' row.

    An ``ece`` column (expected calibration error, percent) follows the paper's columns.
    """
    rows = {}
    for fold in _folds(predictions):
        cm = _fold_cm(predictions, classes, fold)
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
    per_fold = [per_class_metrics(_fold_cm(predictions, classes, f), classes)[METRICS] for f in _folds(predictions)]
    table = sum(per_fold) / len(per_fold) * 100
    table.index.name = "class"
    return table


def with_paper(table: pd.DataFrame, paper: dict) -> pd.DataFrame:
    """Interleave ``<m>``, ``<m>_paper`` and ``<m>_diff`` (ours minus paper) for the paper's metrics."""
    paper_df = pd.DataFrame(paper).T.reindex(table.index)
    cols = {}
    for m in table.columns:
        cols[m] = table[m]
        if m in paper_df.columns:
            cols[f"{m}_paper"] = paper_df[m]
            cols[f"{m}_diff"] = table[m] - paper_df[m]
    return pd.DataFrame(cols, index=table.index)


# --------------------------------------------------------------------------- bootstrap


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


def _patient_resampler(predictions: pd.DataFrame, seed: int):
    """Yield row positions of successive patient-level bootstrap samples."""
    codes, _ = pd.factorize(predictions["patient_id"])
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    while True:
        draw = rng.integers(0, len(counts), size=len(counts))
        n_d = counts[draw]
        ends = np.cumsum(n_d)
        offsets = np.repeat(starts[draw] - (ends - n_d), n_d) + np.arange(ends[-1] if len(ends) else 0)
        yield order[offsets]


def bootstrap_cis(predictions: pd.DataFrame, statistics: dict, n: int = 1000, seed: int = 0,
                  level: float = 0.95) -> dict:
    """Like :func:`bootstrap_ci` for several statistics sharing the same resamples: name -> (point, low, high)."""
    samples = {name: np.empty(n) for name in statistics}
    resample = _patient_resampler(predictions, seed)
    for i in range(n):
        part = predictions.iloc[next(resample)]
        for name, stat in statistics.items():
            samples[name][i] = stat(part)
    alpha = (1 - level) / 2 * 100
    out = {}
    for name, stat in statistics.items():
        s = samples[name][~np.isnan(samples[name])]
        low, high = (np.percentile(s, [alpha, 100 - alpha]) if len(s) else (np.nan, np.nan))
        out[name] = (float(stat(predictions)), float(low), float(high))
    return out


def bootstrap_ci(predictions: pd.DataFrame, statistic, n: int = 1000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float, float]:
    """(point, low, high): percentile interval of ``statistic`` over ``n`` resamples of patients.

    Patients (``patient_id``) are drawn with replacement and all their images come along, so images
    of one patient never count as independent evidence.  Deterministic for a given ``seed``.
    """
    return bootstrap_cis(predictions, {"stat": statistic}, n=n, seed=seed, level=level)["stat"]


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


def false_covid_table(predictions: pd.DataFrame, n: int = 1000, seed: int = 0) -> pd.DataFrame | None:
    """Per label other than COVID-19: films, patients, the share called COVID-19 and its 95 % interval
    (patients resampled). None when the model has no COVID-19 class or the data no other label."""
    if f"prob_{COVID}" not in predictions or not (predictions["label"] != COVID).any():
        return None
    rows = []
    for label in sorted(set(predictions["label"]) - {COVID}, key=str):
        part = predictions[predictions["label"] == label]
        point, low, high = bootstrap_ci(part, false_covid_rate_of(label), n=n, seed=seed)
        rows.append({"label": label, "images": len(part), "patients": int(part["patient_id"].nunique()),
                     "false covid rate": point, "95% CI low": low, "95% CI high": high})
    return pd.DataFrame(rows).set_index("label")


# --------------------------------------------------------------------------- cohorts

ADULT_TEST = "adult-test"  # RUN/adult-test/predictions.csv (coronet.adulttest)


def adult_predictions(run_dir: Path, predictions: pd.DataFrame | None = None) -> pd.DataFrame | None:
    """The run's adult-film predictions: its own ``cohort == adult`` rows, else ``adult-test/``; None if neither."""
    run_dir = Path(run_dir)
    if predictions is None:
        predictions = pd.read_csv(run_dir / "predictions.csv")
    adults = split_cohorts(predictions)[1]
    if adults is not None:
        return adults
    path = run_dir / ADULT_TEST / "predictions.csv"
    return pd.read_csv(path) if path.is_file() else None


def adult_summary(adults: pd.DataFrame, n: int = 1000, seed: int = 0) -> dict:
    """The adult-negative test's figures: false COVID-19 rate per label and normal-vs-pneumonia accuracy,
    each with a 95 % interval over ChestX-ray8 patients."""
    stats = {f"false_covid_{label}": false_covid_rate_of(label) for label in sorted(set(adults["label"]))}
    stats["false_covid_all"] = lambda df: float((df["pred"] == COVID).mean()) if len(df) else float("nan")
    stats["normal_vs_pneumonia"] = normal_vs_pneumonia
    cis = bootstrap_cis(adults, stats, n=n, seed=seed)
    out = {"n_images": int(len(adults)), "n_patients": int(adults["patient_id"].nunique())}
    for name, (point, low, high) in cis.items():
        out[name] = point
        out[f"{name}_ci"] = [low, high]
    for label in sorted(set(adults["label"])):
        out[f"n_{label}"] = int((adults["label"] == label).sum())
    return out


# --------------------------------------------------------------------------- ROC / operating point


def roc_aucs(predictions: pd.DataFrame, classes) -> dict:
    """One-vs-rest ROC AUC per class; classes with a single label value present are skipped."""
    out = {}
    for c in classes:
        y = (predictions["label"] == c).to_numpy()
        if 0 < y.sum() < len(y):
            out[c] = float(roc_auc_score(y, predictions[f"prob_{c}"]))
    return out


def covid_operating_point(predictions: pd.DataFrame, target: float = COVID_TARGET_RECALL) -> dict | None:
    """Highest threshold on ``prob_covid`` with COVID recall >= ``target``, and the specificity there."""
    y = (predictions["label"] == COVID).to_numpy()
    if not 0 < y.sum() < len(y):
        return None
    fpr, tpr, thr = roc_curve(y, predictions[f"prob_{COVID}"], drop_intermediate=False)
    i = int(np.argmax(tpr >= target))  # thresholds decrease, so the first hit is the highest
    return {"threshold": float(thr[i]), "recall": float(tpr[i]), "specificity": float(1 - fpr[i]),
            "target_recall": target}


# --------------------------------------------------------------------------- figures


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_confusion(cm, classes, title: str, path: Path) -> Path:
    fig = Figure(figsize=(4.6, 4))
    ax = fig.add_subplot()
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(int(cm[i, j])), ha="center", va="center",
                    color="white" if cm[i, j] > top / 2 else "black")
    return _save(fig, path)


def plot_roc(predictions: pd.DataFrame, classes, aucs: dict, path: Path) -> Path:
    fig = Figure(figsize=(4.6, 4))
    ax = fig.add_subplot()
    for c in classes:
        if c in aucs:
            fpr, tpr, _ = roc_curve(predictions["label"] == c, predictions[f"prob_{c}"])
            ax.plot(fpr, tpr, label=f"{c} (AUC {aucs[c]:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("one-vs-rest ROC")
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_calibration(predictions: pd.DataFrame, classes, ece: float, path: Path, bins: int = ECE_BINS) -> Path:
    conf, correct = _confidence(predictions, classes)
    idx = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    centers, accs, counts = [], [], []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            centers.append((b + 0.5) / bins)
            accs.append(correct[mask].mean())
            counts.append(mask.sum())
    fig = Figure(figsize=(4.6, 4))
    ax = fig.add_subplot()
    ax.bar(centers, accs, width=1 / bins, edgecolor="k", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (max probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability, ECE {ece:.3f} ({bins} bins)")
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_overview(summaries: dict[str, dict], paper: dict[str, float], path: Path) -> Path:
    """Ours vs the paper per task: accuracy with its 95 % interval (whiskers), the paper's value as a cross."""
    names = list(summaries)
    fig = Figure(figsize=(max(6.0, 1.4 * len(names)), 3.4))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    values = np.array([summaries[n]["accuracy"] for n in names])
    low = np.array([summaries[n]["accuracy_ci"][0] for n in names])
    high = np.array([summaries[n]["accuracy_ci"][1] for n in names])
    ax.bar(x, values, color="#4a7fb5", width=0.55, label="ours (95% CI)")
    ax.errorbar(x, values, yerr=[values - low, high - values], fmt="none", ecolor="black", capsize=4)
    marked = [k for k, n in enumerate(names) if n in paper]
    ax.scatter(x[marked], [paper[names[k]] for k in marked], marker="x", s=80, color="#c0392b", zorder=3,
               label="the paper")
    ax.set_xticks(x, names, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, Path(path))


def sample_predictions(predictions: pd.DataFrame, classes, per_class: int = 2, seed: int = 0) -> pd.DataFrame:
    """Rows for a sample-predictions figure: per true class, correct and wrong predictions alternately.

    For each class in ``classes`` up to ``per_class`` rows are drawn (seeded), taking a
    correctly classified image first and a misclassified one second where both exist, so
    the figure shows the model's errors as well as its successes.
    """
    rng = np.random.default_rng(seed)
    picked = []
    for c in classes:
        rows = predictions[predictions["label"] == c]
        pools = [list(rows.index[rows["pred"] == c]), list(rows.index[rows["pred"] != c])]
        for pool in pools:
            rng.shuffle(pool)
        order = [pool[i] for i in range(max(map(len, pools))) for pool in pools if i < len(pool)]
        picked += order[:per_class]
    return predictions.loc[picked]


def load_sample_images(rows: pd.DataFrame, size: int = 224) -> tuple[list[np.ndarray], pd.DataFrame]:
    """Decode the ``path`` of each row (resized to ``size``); rows whose file is gone or unreadable are dropped."""
    from .imageio import ImageReadError, read_image, resize_square

    images, kept = [], []
    for index, path in rows["path"].items():
        try:
            images.append(resize_square(read_image(path), size))
        except (ImageReadError, OSError):
            continue
        kept.append(index)
    return images, rows.loc[kept]


def plot_prediction_grid(images, classes, probabilities, path, *, true_labels=None, names=None,
                         columns: int = 4) -> Path:
    """The paper's Fig. 8: a grid of images, each titled with its true label and predicted class probabilities.

    ``images`` are 2-D uint8 (shown in grey) or HxWx3 uint8 RGB arrays (e.g. Grad-CAM
    overlays); ``probabilities`` is an (n, len(classes)) array. A title is green when the
    prediction matches the true label, red when it does not, black when the label is unknown.
    """
    probabilities = np.asarray(probabilities, dtype=float).reshape(len(images), len(classes))
    n = len(images)
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    fig = Figure(figsize=(2.6 * columns, 3.3 * rows))
    for i, image in enumerate(images):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(image, cmap="gray" if np.ndim(image) == 2 else None, vmin=0, vmax=255)
        ax.set_axis_off()
        pred = classes[int(np.argmax(probabilities[i]))]
        truth = true_labels[i] if true_labels is not None else None
        head = f"true {truth} / pred {pred}" if truth is not None else f"pred {pred}"
        probs = "  ".join(f"{c} {p:.2f}" for c, p in zip(classes, probabilities[i]))
        lines = ([Path(str(names[i])).name[:28]] if names is not None else []) + [head, _wrap(probs, 30)]
        color = "black" if truth is None else ("green" if truth == pred else "red")
        ax.set_title("\n".join(lines), fontsize=7, color=color)
    return _save(fig, Path(path))


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


# --------------------------------------------------------------------------- rendering


#: Columns that hold counts: shown as integers.
COUNT_COLUMNS = {"images", "patients", "n_patients", "n_bootstrap", "films", "count"}


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if np.isnan(v) else f"{v:.2f}"
    return str(v)


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """A table as a reader should see it: ``m``, ``m_paper`` and ``m_diff`` in one cell, "ours / paper / +diff";
    counts as integers; other numbers with two decimals. (The CSV files keep the separate columns.)"""
    out = {}
    for column in df.columns:
        if str(column).endswith(("_paper", "_diff")) and str(column).rsplit("_", 1)[0] in df.columns:
            continue
        values = df[column]
        if f"{column}_paper" in df.columns:
            paper, diff = df[f"{column}_paper"], df.get(f"{column}_diff", values - df[f"{column}_paper"])
            out[f"{column} (ours / paper / diff)"] = [
                _fmt(v) if pd.isna(p) else f"{_fmt(v)} / {p:.2f} / {d:+.2f}" for v, p, d in zip(values, paper, diff)]
        elif column in COUNT_COLUMNS:
            out[column] = ["" if pd.isna(v) else str(int(v)) for v in values]
        else:
            out[column] = [_fmt(v) for v in values]
    table = pd.DataFrame(out, index=df.index)
    table.index.name = df.index.name
    return table


def markdown_table(df: pd.DataFrame) -> str:
    df = display_table(df)
    head = [df.index.name or ""] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [_fmt(v) for v in row]) + " |")
    return "\n".join(lines)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def html_table(df: pd.DataFrame) -> str:
    return display_table(df).to_html(na_rep="", border=0, classes="t")


def summary_sentence(summary: dict) -> str:
    """One sentence with the key figures and their 95 % intervals."""
    def figure(key, name):
        value, ci = summary.get(key), summary.get(f"{key}_ci")
        return None if value is None or ci is None else f"{name} {value:.3f} (95% CI {ci[0]:.3f}-{ci[1]:.3f})"

    parts = [p for p in (figure("accuracy", "accuracy"), figure("covid_recall", "COVID-19 recall")) if p]
    adult = summary.get("adult")
    if adult:
        ci = adult["false_covid_all_ci"]
        parts.append(f"{adult['false_covid_all']:.1%} of {adult['n_images']} adult films without COVID-19 called "
                     f"COVID-19 (95% CI {ci[0]:.1%}-{ci[1]:.1%})")
    where = f"On {summary['n_images']} films of {summary['n_patients']} patients"
    return where + (": " + "; ".join(parts) if parts else "") + ". Intervals: bootstrap over patients."


def summary_lines(summary: dict) -> list[str]:
    """The lines the CLI prints: accuracy and COVID-19 recall with their 95 % intervals, and the adult films'
    false COVID-19 rate where the run has an adult-negative test."""
    n = summary.get("n_patients")
    tail = f", bootstrap over {n} patients)" if n is not None else ")"
    lines = []
    for key, name in (("accuracy", "accuracy"), ("covid_recall", "covid recall")):
        value, ci = summary.get(key), summary.get(f"{key}_ci")
        if value is None or ci is None:
            lines.append(f"{name} n/a")
        else:
            lines.append(f"{name} {value:.4f} (95% CI {ci[0]:.2f}-{ci[1]:.2f}{tail}")
    adult = summary.get("adult")
    if adult:
        ci = adult["false_covid_all_ci"]
        lines.append(f"adult films called covid {adult['false_covid_all']:.4f} (95% CI {ci[0]:.2f}-{ci[1]:.2f}, "
                     f"{adult['n_images']} adult films without COVID-19, bootstrap over {adult['n_patients']} "
                     "patients)")
    return lines


def _training_tables(run_dir: Path) -> tuple[pd.DataFrame | None, dict]:
    """Last row of each ``fold-K/metrics.csv`` and the paths of existing ``fold-K/curves.png``."""
    last, curves = {}, {}
    for fold_dir in sorted(run_dir.glob("fold-*")):
        metrics = fold_dir / "metrics.csv"
        if metrics.is_file():
            df = pd.read_csv(metrics)
            if len(df):
                last[fold_dir.name] = df.iloc[-1]
        if (fold_dir / "curves.png").is_file():
            curves[fold_dir.name] = fold_dir / "curves.png"
    table = pd.DataFrame(last).T if last else None
    if table is not None:
        table.index.name = "fold"
    return table, curves


def render_html(title: str, sections: list[tuple[str, str]]) -> str:
    style = ("body{font-family:sans-serif;max-width:1180px;margin:2em auto;padding:0 1em}"
             ".note{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em;font-weight:bold}"
             ".lead{font-size:1.1em}"
             "table.t{border-collapse:collapse;font-size:.85em;max-width:100%}table.t td,table.t th{border:1px "
             "solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}"
             "div.scroll{overflow-x:auto;max-width:100%}img{max-width:100%;margin:4px}"
             "figure{display:inline-block;vertical-align:top;max-width:31%;margin:4px}")
    body = "".join(f"<h2>{html.escape(h)}</h2>\n<div class='scroll'>{content}</div>\n" for h, content in sections)
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n<h1>{html.escape(title)}</h1>\n"
            f"<p class='note'>{html.escape(DISCLAIMER)}</p>\n{body}</body></html>\n")


# --------------------------------------------------------------------------- driver


def write_report(run_dir, out=None, n_bootstrap: int = 1000, seed: int = 0) -> dict:
    """Write the report for ``run_dir`` into ``out`` (default ``run_dir/report``); return the summary."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    every = read_predictions(run_dir / "predictions.csv")
    # the paper's tables are about its Table I data only; adult negatives (cohort "adult") get their own section
    predictions, _ = split_cohorts(every)
    adults = adult_predictions(run_dir, every)
    classes = classes_of(predictions)
    task = task_of(classes)
    config = _run_config(run_dir)
    paper_table = config.get("paper_table")
    # an external evaluation is not a cross-validation: the paper's figures appear only as a labelled reference
    external = config.get("kind") == "evaluate"

    table3 = fold_table(predictions, classes)
    table4 = class_table(predictions, classes)
    table5 = task_row(table3, task)
    table6 = None
    reference = None
    if external:
        reference = _paper_reference(task)
    elif task == "4-class":
        table3 = with_paper(table3, PAPER["table3"])
        table4 = with_paper(table4, PAPER["table4"])
    if external:
        pass  # no Table V/VI beside the paper's: see the reference table
    elif paper_table == "table6" and task == "3-class":
        table6 = table4.copy()
        table6.loc["accuracy", "accuracy"] = table3.loc["mean", "accuracy"]
        table6 = with_paper(table6, {**{c: PAPER["table6"][c] for c in classes},
                                     "accuracy": {"accuracy": PAPER["table6"]["accuracy"]}})
        table6.to_csv(out / "table6.csv")
    elif task in PAPER["table5"]:
        table5 = with_paper(table5, PAPER["table5"])
    table3.to_csv(out / "table3.csv")
    table4.to_csv(out / "table4.csv")
    table5.to_csv(out / "table5.csv")

    stats = {"accuracy": accuracy}
    for c in classes:
        stats[f"recall_{c}"] = recall_of(c)
        stats[f"precision_{c}"] = precision_of(c)
    cis = bootstrap_cis(predictions, stats, n=n_bootstrap, seed=seed)
    n_patients = int(predictions["patient_id"].nunique())
    ci = pd.DataFrame(cis, index=["point", "low", "high"]).T
    ci.index.name = "statistic"
    ci["n_patients"] = n_patients
    ci["n_bootstrap"] = n_bootstrap
    ci.to_csv(out / "ci.csv")

    aucs = roc_aucs(predictions, classes)
    auc = pd.DataFrame({"auc": pd.Series(aucs, dtype=float)}).reindex(classes)
    auc.index.name = "class"
    auc.to_csv(out / "auc.csv")
    ece = expected_calibration_error(predictions, classes)
    op = covid_operating_point(predictions) if COVID in classes else None
    false_covid = false_covid_table(predictions, n=n_bootstrap, seed=seed)
    if false_covid is not None:
        false_covid.to_csv(out / "false-covid.csv")
    adult = None
    if adults is not None and COVID in classes:
        adult = adult_summary(adults, n=n_bootstrap, seed=seed)
        adult["trained_with_adult_negatives"] = split_cohorts(every)[1] is not None
        adult_table = false_covid_table(adults, n=n_bootstrap, seed=seed)
        adult_table.to_csv(out / "adult-false-covid.csv")

    figures = {}
    for fold in _folds(predictions):
        figures[f"confusion, fold {fold}"] = plot_confusion(
            _fold_cm(predictions, classes, fold), classes, f"fold {fold}", out / f"confusion-fold-{fold}.png")
    pooled_cm = confusion(predictions["label"], predictions["pred"], classes)
    figures["confusion, pooled"] = plot_confusion(pooled_cm, classes, "all folds", out / "confusion-pooled.png")
    figures["ROC"] = plot_roc(predictions, classes, aucs, out / "roc.png")
    figures["calibration"] = plot_calibration(predictions, classes, ece, out / "calibration.png")
    images, shown = load_sample_images(sample_predictions(predictions, classes, seed=seed))
    if images:
        figures["sample predictions (Fig. 8)"] = plot_prediction_grid(
            images, classes, shown[[f"prob_{c}" for c in classes]].to_numpy(), out / "samples.png",
            true_labels=list(shown["label"]), names=list(shown["path"]))

    summary = {
        "run": run_dir.resolve().name,
        "task": task,
        "classes": classes,
        "n_images": int(len(predictions)),
        "n_patients": n_patients,
        "n_bootstrap": n_bootstrap,
        "accuracy": cis["accuracy"][0],
        "accuracy_ci": [cis["accuracy"][1], cis["accuracy"][2]],
        "covid_recall": cis[f"recall_{COVID}"][0] if COVID in classes else None,
        "covid_recall_ci": [cis[f"recall_{COVID}"][1], cis[f"recall_{COVID}"][2]] if COVID in classes else None,
        "auc": aucs,
        "ece": ece,
        "covid_operating_point": op,
        "false_covid": None if false_covid is None else {
            label: {"rate": row["false covid rate"], "ci": [row["95% CI low"], row["95% CI high"]],
                    "images": int(row["images"])} for label, row in false_covid.iterrows()},
        "adult": adult,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    training, curves = _training_tables(run_dir)
    if external:
        tables = {"Overall (percent): class-averaged precision, recall, specificity, F1; accuracy":
                  table3.loc[["mean"]].rename(index={"mean": "all"}),
                  "Per class (percent)": table4}
        if reference is not None:
            reference.to_csv(out / "paper-reference.csv")
            tables["The paper's figures, for reference only: its 4-fold cross-validation on its own images, "
                   "not this data (not comparable)"] = reference
    else:
        tables = {"Table III: per fold (percent)": table3,
                  "Table IV: per class, mean over folds (percent)": table4,
                  f"Table V: the {task or 'task'} row (fold means, percent)": table5}
    if table6 is not None:
        tables["Table VI: dataset-2, per class and accuracy (percent)"] = table6
    if false_covid is not None:
        tables["False COVID-19 rate: films of each other label called COVID-19 (95% CI over patients)"] = false_covid
    if adult is not None:
        how = ("held-out adult films of each fold (the models trained on the other folds' adult films)"
               if adult["trained_with_adult_negatives"] else "adult films none of the models saw in training")
        tables[f"Adult films (ChestX-ray8, dataset-2): {how}; false COVID-19 rate "
               f"(normal vs pneumonia accuracy {adult['normal_vs_pneumonia']:.3f}, 95% CI "
               f"{adult['normal_vs_pneumonia_ci'][0]:.3f}-{adult['normal_vs_pneumonia_ci'][1]:.3f})"] = adult_table
    summary["title"] = report_title(run_dir, config)
    _write_markdown(out, summary, tables, ci, auc, training)
    _write_html(out, summary, tables, ci, auc, training, figures, curves)
    return summary


#: Profiles whose runs only check that the pipeline works.
PIPELINE_CHECK_PROFILES = ("quick", "tiny")


def report_title(run_dir: Path, config: dict) -> str:
    """The page title: what the run is (an external evaluation, a pipeline check, or a cross-validation)."""
    name = Path(run_dir).resolve().name
    if config.get("kind") == "evaluate":
        return f"External evaluation on {config.get('data', 'other data')} ({name})"
    profile = str(config.get("profile") or "").removeprefix("finetune-")
    if profile in PIPELINE_CHECK_PROFILES:
        return f"Pipeline check, not a result ({profile} profile): {name}"
    return f"Cross-validation report: {name}"


def _paper_reference(task: str | None) -> pd.DataFrame | None:
    """The paper's Table V row for ``task`` (and Table IV's per-class rows for 4 classes), as a reference."""
    if task not in PAPER["table5"]:
        return None
    rows = {f"{task} (Table V)": PAPER["table5"][task]}
    if task == "4-class":
        rows.update({f"{c} (Table IV)": v for c, v in PAPER["table4"].items()})
    table = pd.DataFrame(rows).T
    table.index.name = "the paper"
    return table


def _run_config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _op_text(op: dict | None) -> str:
    if op is None:
        return "not available (no COVID-19 class or only one label value)"
    return (f"threshold {op['threshold']:.4f} on prob_covid gives COVID-19 recall {op['recall']:.4f} "
            f"(target >= {op['target_recall']}) at specificity {op['specificity']:.4f}")


def _write_markdown(out, summary, tables, ci, auc, training) -> None:
    parts = [f"# {summary['title']}", "", f"*{DISCLAIMER}*", "", summary_sentence(summary), ""]
    for title, table in tables.items():
        parts += [f"## {title}", "", markdown_table(table), ""]
    parts += ["## 95% bootstrap intervals (patients resampled)", "", markdown_table(ci), "",
             "## ROC AUC (one-vs-rest)", "", markdown_table(auc), "",
             f"Expected calibration error ({ECE_BINS} bins, max probability): {summary['ece']:.4f}", "",
             f"COVID-19 operating point: {_op_text(summary['covid_operating_point'])}", ""]
    if training is not None:
        parts += ["## Training (last epoch per fold)", "", markdown_table(training), ""]
    (out / "report.md").write_text("\n".join(parts))


def _write_html(out, summary, tables, ci, auc, training, figures, curves) -> None:
    imgs = "".join(f"<figure style='display:inline-block'><img src='{_data_uri(p)}' alt='{html.escape(name)}'>"
                   f"<figcaption>{html.escape(name)}</figcaption></figure>" for name, p in figures.items())
    sections = [
        ("Summary", f"<p class='lead'>{html.escape(summary_sentence(summary))}</p>"
         f"<p>Classes: {html.escape(', '.join(summary['classes']))}.</p>"),
        *[(title, html_table(table)) for title, table in tables.items()],
        ("95% bootstrap intervals (patients resampled)", html_table(ci)),
        ("ROC AUC (one-vs-rest) and calibration", html_table(auc)
         + f"<p>Expected calibration error ({ECE_BINS} bins, max probability): {summary['ece']:.4f}</p>"
         + f"<p>COVID-19 operating point: {html.escape(_op_text(summary['covid_operating_point']))}</p>"),
        ("Figures", imgs),
    ]
    if training is not None or curves:
        content = html_table(training) if training is not None else ""
        content += "".join(f"<figure><img src='{_data_uri(p)}' alt='{html.escape(k)} curves'>"
                           f"<figcaption>{html.escape(k)}</figcaption></figure>" for k, p in curves.items())
        sections.append(("Training", content))
    (out / "report.html").write_text(render_html(summary["title"], sections), encoding="utf-8")
