"""The training curves (the paper's Fig. 4), drawn from a fold's ``metrics.csv`` after every epoch.

The figure is drawn during training (by :class:`coronet.training.callbacks.EpochLog`), so it lives in the training
layer, which may not import :mod:`coronet.evaluation`; :mod:`coronet.evaluation.figures` re-exports it beside
the report's figures. Drawn on a bare :class:`matplotlib.figure.Figure` (no pyplot, no global backend).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from ..layout import atomic_path


def plot_curves(metrics_csv: Path, out: Path) -> Path:
    """Training/validation accuracy and loss per epoch (the paper's Fig. 4) from ``metrics_csv`` into ``out``."""
    table = pd.read_csv(metrics_csv)
    figure = Figure(figsize=(9, 3.4))
    for axis, name in zip(figure.subplots(1, 2), ("acc", "loss")):
        axis.plot(table.epoch, table[f"train_{name}"], "o-", label="training")
        validated = table.dropna(subset=[f"val_{name}"])
        axis.plot(validated.epoch, validated[f"val_{name}"], "s-", label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel("accuracy" if name == "acc" else "cross-entropy loss")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(Path(metrics_csv).parent.name)
    figure.tight_layout()
    with atomic_path(out) as tmp:
        figure.savefig(tmp, dpi=110)
    return Path(out)


__all__ = ["plot_curves"]
