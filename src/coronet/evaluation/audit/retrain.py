"""Test 6 (Maguolo & Nanni's, the decisive one): a model retrained and tested on films with the lungs removed.

Unlike tests 1 and 2 this model has seen occluded films in training, so its accuracy measures what the films
say without their lungs, not its robustness to an occlusion it never saw.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd

from ...data.cohorts import table1_rows
from ...layout import AuditDir, DatasetDir, prob_column
from ...training.profiles import TrainConfig
from .config import AuditConfig
from .occlusion import lung_masks, occlude

logger = logging.getLogger(__name__)


def retrained_test(
    dataset: DatasetDir,
    files: AuditDir,
    training: pd.DataFrame,
    cache: np.ndarray,
    size: int,
    train: TrainConfig,
    retrain_folds: list[int],
    config: AuditConfig,
    progress: bool,
) -> pd.DataFrame:
    """Test 6: the run's own training data with the lungs removed -- adult negatives too, where the run had
    them -- and its own settings; each retrained fold tested on its Table I films only."""
    from ...training.fit import fit_fold

    training_images = np.asarray(cache[training["cache_index"].to_numpy()])
    training_lungs = lung_masks(list(training["path"]), size, config, quiet=True)
    removed = files.occluded_dataset
    _write_occluded_dataset(dataset, removed, training, occlude(training_images, training_lungs, "outside"), size)
    parts = []
    for fold in retrain_folds:
        logger.info(f"audit: retraining fold {fold} on lungs-removed films ({train.epochs} epochs)")
        result = fit_fold(removed.path, fold, files.retrained(fold).path, train, resume=True, progress=progress)
        parts.append(table1_rows(result.predictions))
    return pd.concat(parts, ignore_index=True)[
        ["path", "patient_id", "fold", "label", *[prob_column(c) for c in train.classes], "pred"]
    ]


def _write_occluded_dataset(
    dataset: DatasetDir, out: DatasetDir, manifest: pd.DataFrame, images: np.ndarray, size: int
) -> None:
    """A prepared dataset whose films are ``images`` (lungs removed): same rows, folds and patients."""
    from ...data.prepare import write_cache

    out.path.mkdir(parents=True, exist_ok=True)
    table = manifest.copy()
    table["cache_index"] = np.arange(len(table))
    if out.exists() and out.manifest.read_text() == table.to_csv(index=False):
        return  # the same occlusion already written (a resumed audit)
    write_cache(out.cache(size), list(images))
    table.to_csv(out.manifest, index=False)
    shutil.copy2(dataset.record, out.record)
