"""The report's figures (matplotlib, no display needed): confusion matrices, ROC, calibration, the paper's
Fig. 8 sample grid, and the overview's ours-vs-paper bars. Each is written to a PNG file and its path returned.

The training curves (the paper's Fig. 4, :func:`plot_curves`) are drawn after every epoch while a fold trains, so
they live in :mod:`coronet.training.curves` (training may not import evaluation); they are re-exported here so
every figure of the package is found in one place."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from ..layout import prob_column
from ..training.curves import plot_curves
from .metrics import ECE_BINS, confidence
from .results import Estimate


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
            ax.text(
                j, i, str(int(cm[i, j])), ha="center", va="center", color="white" if cm[i, j] > top / 2 else "black"
            )
    return _save(fig, path)


def plot_roc(predictions: pd.DataFrame, classes, aucs: dict, path: Path) -> Path:
    fig = Figure(figsize=(4.6, 4))
    ax = fig.add_subplot()
    for c in classes:
        if c in aucs:
            fpr, tpr, _ = roc_curve(predictions["label"] == c, predictions[prob_column(c)])
            ax.plot(fpr, tpr, label=f"{c} (AUC {aucs[c]:.3f})")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("one-vs-rest ROC")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8)
    else:  # e.g. films of one class only: no class has both positives and negatives
        ax.text(0.5, 0.5, "no ROC: every film has the same label", ha="center", va="center", fontsize=8)
    return _save(fig, path)


def plot_calibration(predictions: pd.DataFrame, classes, ece: float, path: Path, bins: int = ECE_BINS) -> Path:
    conf, correct = confidence(predictions, classes)
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


def plot_overview(accuracies: dict[str, Estimate], paper: dict[str, float], path: Path) -> Path:
    """Ours vs the paper per task: accuracy with its 95 % interval (whiskers), the paper's value as a cross."""
    names = list(accuracies)
    fig = Figure(figsize=(max(6.0, 1.4 * len(names)), 3.4))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(names))
    values = np.array([accuracies[n].value for n in names])
    low = np.array([accuracies[n].low for n in names])
    high = np.array([accuracies[n].high for n in names])
    ax.bar(x, values, color="#4a7fb5", width=0.55, label="ours (95% CI)")
    ax.errorbar(x, values, yerr=[values - low, high - values], fmt="none", ecolor="black", capsize=4)
    marked = [k for k, n in enumerate(names) if n in paper]
    ax.scatter(
        x[marked], [paper[names[k]] for k in marked], marker="x", s=80, color="#c0392b", zorder=3, label="the paper"
    )
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
    from ..data.imageio import ImageReadError, read_image, resize_square

    images, kept = [], []
    for index, path in rows["path"].items():
        try:
            images.append(resize_square(read_image(path), size))
        except (ImageReadError, OSError):
            continue
        kept.append(index)
    return images, rows.loc[kept]


def plot_prediction_grid(
    images, classes, probabilities, path, *, true_labels=None, names=None, columns: int = 4
) -> Path:
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


__all__ = [
    "load_sample_images",
    "plot_calibration",
    "plot_confusion",
    "plot_curves",
    "plot_overview",
    "plot_prediction_grid",
    "plot_roc",
    "sample_predictions",
]
