"""Test 5: where the network looked -- the share of Grad-CAM mass inside the lung field, on a seeded sample.

Saliency inside the lungs does not prove the absence of shortcuts (Viviano et al., ICLR 2021); the share is
reported beside the lung field's own share of the film, per class and for correct and wrong predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ...data.augment import resize_batch
from ...layout import PROB_PREFIX, AuditDir, RunDir
from ...models.modeldir import load_model_dir
from .config import AuditConfig

#: Films shown in the examples figure: at most this many, two per fold.
EXAMPLES, EXAMPLES_PER_FOLD = 8, 2


def cam_mass(
    run_dir: Path | None,
    manifest: pd.DataFrame,
    intact: pd.DataFrame,
    cache: np.ndarray,
    lungs_of,
    config: AuditConfig,
    out: Path,
    model_dirs: dict[int, Path] | None = None,
) -> tuple[pd.DataFrame, Path | None]:
    """Share of Grad-CAM mass inside the lung field, per class and correct / wrong, on a seeded sample.

    Fold ``k``'s films are explained by ``model_dirs[k]`` (default: ``run_dir/fold-k/model``); ``lungs_of(rows,
    size)`` gives their lung fields. Returns the table (one row per film) and the examples figure (None: none).
    """
    from ...deploy.explain import GradCam, overlay

    prob_columns = [c for c in intact.columns if c.startswith(PROB_PREFIX)]
    rows: list[dict] = []
    shown: list[tuple] = []
    for fold, part in _sample(manifest, intact, prob_columns, config).groupby("fold"):
        model_dir = (model_dirs or {}).get(fold) or RunDir(Path(run_dir or ".")).fold(fold).model
        model, card = load_model_dir(model_dir)
        images = np.asarray(cache[part["cache_index"].to_numpy()])
        batch = resize_batch(torch.from_numpy(images)[:, None].float() / 255, card["input_size"]).numpy()
        cam = GradCam(model, card["input_size"])
        maps = cam(batch, _explained_classes(model, batch, part["pred"], card["classes"]))
        lungs = lungs_of(part, card["input_size"])
        for k, (row, heat) in enumerate(zip(part.itertuples(index=False), maps)):
            total = float(heat.sum())
            rows.append(
                {
                    "path": row.path,
                    "label": row.label,
                    "pred": row.pred,
                    "correct": bool(row.correct),
                    "fold": fold,
                    "inside": float(heat[lungs[k]].sum() / total) if total > 0 else np.nan,
                }
            )
            if len(shown) < EXAMPLES and k < EXAMPLES_PER_FOLD:
                shown.append((overlay(images[k], heat), part[prob_columns].to_numpy()[k], row.label, row.path))
    return pd.DataFrame(rows), _examples_figure(shown, prob_columns, out)


def _sample(manifest: pd.DataFrame, intact: pd.DataFrame, prob_columns: list[str], config: AuditConfig):
    """``config.cam_per_group`` films per (label, correct or wrong), drawn with ``config.seed``."""
    merged = manifest.merge(intact[["path", "pred", *prob_columns]], on="path")
    merged["correct"] = merged["pred"] == merged["label"]
    shuffled = merged.sample(frac=1.0, random_state=config.seed)
    return shuffled.groupby(["label", "correct"], sort=True).head(config.cam_per_group)


def _explained_classes(model, batch: np.ndarray, predictions: pd.Series, model_classes) -> list[int]:
    """The class index each film's Grad-CAM explains: its prediction, or, where the task merged the model's
    classes (a 4-class model on 3-class films predicts "pneumonia"), the model's own most probable class."""
    if set(predictions) <= set(model_classes):
        return [list(model_classes).index(p) for p in predictions]
    with torch.inference_mode():
        own = model(torch.from_numpy(np.ascontiguousarray(batch))).argmax(1).tolist()
    return [list(model_classes).index(p) if p in model_classes else k for p, k in zip(predictions, own)]


def _examples_figure(shown: list[tuple], prob_columns: list[str], out: Path) -> Path | None:
    """The overlays with their probabilities, true labels and file names in one grid (None: nothing shown)."""
    from ..figures import plot_prediction_grid

    if not shown:
        return None
    figure = AuditDir(out).gradcam_examples
    plot_prediction_grid(
        [s[0] for s in shown],
        [c[len(PROB_PREFIX) :] for c in prob_columns],
        np.stack([s[1] for s in shown]),
        figure,
        true_labels=[s[2] for s in shown],
        names=[s[3] for s in shown],
    )
    return figure
