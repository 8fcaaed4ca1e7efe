"""Tests 1 and 2: the lung field (box or masks) blacked out, or everything else, and the films predicted again."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ...data.augment import resize_batch
from ...deploy.predict import Predictor
from ...layout import classes_of, predictions_table, prob_column
from ..metrics import accuracy
from .config import AuditConfig

logger = logging.getLogger(__name__)

#: Tests 1 and 2: what each occlusion keeps of the film.
OCCLUSIONS = (("lungs-removed", "outside"), ("lungs-only", "lungs"))


def box_mask(size: int, box) -> np.ndarray:
    """(size, size) bool: True inside the relative box ``x0, y0, x1, y1``."""
    x0, y0, x1, y1 = (int(round(v * size)) for v in box)
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def lung_masks(paths, size: int, config: AuditConfig, quiet: bool = False) -> np.ndarray:
    """(N, size, size) bool lung fields: the box, or each film's mask file where ``config.masks`` has one."""
    base = box_mask(size, config.lung_box)
    masks = np.repeat(base[None], len(paths), axis=0)
    if config.masks:
        from PIL import Image

        folder, found = Path(config.masks), 0
        for k, path in enumerate(paths):
            candidate = folder / (Path(path).stem + ".png")
            if candidate.is_file():
                with Image.open(candidate) as image:
                    masks[k] = np.asarray(image.convert("L").resize((size, size), Image.Resampling.NEAREST)) > 0
                found += 1
        message = f"lung masks: {found} of {len(paths)} films have one in {folder}; the others use the box"
        logger.log(logging.DEBUG if quiet else logging.INFO, message)
    return masks


def quiet_lung_masks(rows: pd.DataFrame, side: int, config: AuditConfig) -> np.ndarray:
    """:func:`lung_masks` of a manifest's rows, without the log line (the audit said it once already)."""
    return lung_masks(list(rows["path"]), side, config, quiet=True)


def occlude(images: np.ndarray, lungs: np.ndarray, keep: str) -> np.ndarray:
    """Black out the lungs (``keep="outside"``) or everything else (``keep="lungs"``); a copy."""
    if keep not in ("outside", "lungs"):
        raise ValueError(f"keep must be 'outside' or 'lungs', not {keep!r}")
    out = np.array(images, copy=True)
    out[lungs if keep == "outside" else ~lungs] = 0
    return out


def predict_images(model_dir: Path, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, list[str]]:
    """Probabilities (N, C) of uint8 films (N, S, S) with a model directory's network as its card says (preprocessing,
    TTA): :meth:`coronet.deploy.predict.Predictor.run` in float32 PyTorch, the reference every test is read against."""
    predictor = Predictor(model_dir, runtime="torch")
    parts = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))[:, None]
        parts.append(predictor.run(resize_batch(batch.float().div_(255), predictor.input_size).numpy()))
    empty = np.zeros((0, len(predictor.classes)), dtype=np.float32)
    return (np.concatenate(parts) if parts else empty), list(predictor.classes)


def occlusion_tests(
    manifest: pd.DataFrame,
    images: np.ndarray,
    lungs: np.ndarray,
    models: dict[int, Path],
    labels: list[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Tests 1 and 2: each fold's films (``manifest`` rows, ``images``) occluded and predicted by its model.

    models: fold -> model directory. labels: the data's labels; a model whose classes do not cover them (a
    4-class model on 3-class data) has its predictions merged into them (:func:`coronet.tasks.default_class_map`).
    """
    tests = {}
    for name, keep in OCCLUSIONS:
        occluded = occlude(images, lungs, keep)
        parts = []
        for fold, model_dir in models.items():
            chosen = (manifest["fold"] == fold).to_numpy()
            probabilities, model_classes = predict_images(model_dir, occluded[chosen])
            table = predictions_table(manifest[chosen], probabilities, model_classes)
            if labels is not None and not set(labels) <= set(model_classes):
                table = _remap_like(table, labels)
            parts.append(table)
        tests[name] = pd.concat(parts, ignore_index=True)
        logger.info(f"audit: {name}: accuracy {accuracy(tests[name]):.3f}")
    return tests


def _remap_like(table: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """A model's predictions merged into the data's label set (a 4-class model: bacterial + viral = pneumonia)."""
    from ...tasks import default_class_map, merge_probabilities

    classes = classes_of(table)
    mapping = default_class_map(classes, labels)
    merged, merged_labels = merge_probabilities(table[[prob_column(c) for c in classes]].to_numpy(), classes, mapping)
    return predictions_table(table, merged, merged_labels)
