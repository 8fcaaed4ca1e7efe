"""``coronet compare``: the paper's Table VII, measured -- several backbones, the same folds, profile and report.

Each backbone gets CoroNet's head (Flatten, Dropout, Dense 256, Dense classes) and the
whole protocol: 4-class cross-validation, then the 3-class and binary fine-tunes from
each fold's 4-class model. The paper quotes its peers' numbers from their own papers,
on other data and splits; here every network sees the same images, folds and settings,
so the differences are the networks'.

``OUT/<backbone>/{4class,3class,binary}/`` are ordinary run directories; ``compare.csv``
and ``compare.md`` (``compare.html``) hold one row per backbone: parameters, accuracy with its 95 %
interval (bootstrap over patients) per task, and training images/s.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd

from ..layout import RunDir
from ..tasks import get_task
from ..training.finetune import finetune
from ..training.fit import run_cv
from ..training.profiles import get_profile
from .pages import Page, Section, Table, markdown_table, write_page
from .report import write_report

logger = logging.getLogger(__name__)

#: CoroNet first, then the peers the paper lists (its Table VII) that have an ImageNet-style backbone in timm.
DEFAULT_BACKBONES = ("legacy_xception", "resnet50", "densenet121", "vgg19", "darkcovidnet")
#: The tasks compared, by name (their titles head the table's columns).
TASK_COLUMNS = ("4class", "3class", "binary")


def compare(
    dataset_dir: str | os.PathLike,
    out: str | os.PathLike,
    backbones=DEFAULT_BACKBONES,
    profile: str = "quick",
    tasks=tuple(TASK_COLUMNS),
    folds: list[int] | None = None,
    n_bootstrap: int = 1000,
    progress: bool = False,
    **overrides,
) -> pd.DataFrame:
    """Run the protocol for every backbone (resuming finished parts); return and write the comparison table."""
    dataset_dir, out = Path(dataset_dir), Path(out)
    unknown = sorted(set(tasks) - set(TASK_COLUMNS))
    if unknown or "4class" not in tasks:
        raise ValueError(f"tasks must include 4class and be among {list(TASK_COLUMNS)} (got {list(tasks)})")
    rows = []
    for backbone in backbones:
        config = get_profile(profile).with_overrides(backbone=backbone, **overrides)
        base = out / backbone
        logger.info(f"== {backbone}: 4class")
        run_cv(dataset_dir, base / "4class", config, profile=profile, folds=folds, resume=True, progress=progress)
        for task in tasks:
            if task != "4class":
                logger.info(f"== {backbone}: {task}")
                finetune(
                    base / "4class",
                    base / task,
                    task=task,
                    profile=profile,
                    folds=folds,
                    resume=True,
                    progress=progress,
                )
        rows.append(backbone_row(base, backbone, tasks, n_bootstrap))
    table = pd.DataFrame(rows).set_index("backbone")
    table.to_csv(out / "compare.csv")
    page = Page(
        f"Backbones compared ({profile} profile, same folds)",
        [Section("Accuracy per task (percent, 95% CI over patients) and training speed", [Table(table)])],
    )
    write_page(page, out / "compare.md", out / "compare.html")
    logger.info(markdown_table(table))
    return table


def backbone_row(base: Path, backbone: str, tasks, n_bootstrap: int) -> dict:
    """One comparison row from a backbone's run directories (reports are written as needed)."""
    four = RunDir(base / "4class")
    card = json.loads(next(fold.model_card for fold in four.folds() if fold.has_model()).read_text())
    row = {"backbone": backbone, "parameters": card["parameters"]["trainable"]}
    for task in tasks:
        accuracy = write_report(base / task, n_bootstrap=n_bootstrap).accuracy
        name = get_task(task).title
        row[f"{name} accuracy"] = round(100 * accuracy.value, 2)
        row[f"{name} 95% CI"] = f"{100 * accuracy.low:.1f}-{100 * accuracy.high:.1f}"
    speeds = [_train_speed(fold.metrics) for fold in four.folds() if fold.metrics.is_file()]
    row["train images/s"] = round(float(pd.Series(speeds).mean()), 2)
    return row


def _train_speed(metrics_csv: Path) -> float:
    """Training images/s of a fold, leaving out the first epoch (start-up) when there are more."""
    speeds = pd.read_csv(metrics_csv)["train_images_per_s"]
    return float(speeds.iloc[1:].mean() if len(speeds) > 1 else speeds.iloc[0])


__all__ = ["DEFAULT_BACKBONES", "backbone_row", "compare"]
