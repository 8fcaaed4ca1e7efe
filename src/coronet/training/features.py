"""The head trained alone on a frozen backbone's features, computed once per film (the fine-tunes of ``fast``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import TensorDataset

from ..data.augment import resize_batch
from ..layout import FoldDir
from ..models.coronet import CoroNet, set_trainable
from .loaders import FoldParts
from .module import FeatureHeadModule
from .profiles import TrainConfig
from .ranks import rank_zero_logger
from .trainer import FoldResult, train_fold

logger = rank_zero_logger(__name__)


def backbone_features(
    model: CoroNet, cache: np.ndarray, rows, input_size: int, mirrored: bool = False, batch_size: int = 32
) -> torch.Tensor:
    """The frozen backbone's flattened feature maps (N, C*H*W) of cache ``rows`` (mirror images if asked).

    The weights are channels_last while it runs, as the Predictor's (2x faster on a CPU than channels_last input
    alone), and contiguous again afterwards (safetensors saves contiguous tensors only)."""
    model.eval()
    rows = np.asarray(rows)
    parts = [torch.zeros(0, int(np.prod(model.feature_shape)))]  # no rows: (0, C*H*W)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                images = torch.from_numpy(np.asarray(cache[rows[start : start + batch_size]]))[:, None]
                images = resize_batch(images.float().div_(255), input_size)
                if mirrored:
                    images = images.flip(-1)
                images = images.contiguous(memory_format=torch.channels_last)
                parts.append(model.forward_features(images).flatten(1).float())
    finally:
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return torch.cat(parts)


def feature_datasets(
    model: CoroNet,
    cache: np.ndarray,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    class_index: dict[str, int],
    config: TrainConfig,
) -> tuple[TensorDataset, TensorDataset]:
    """The frozen backbone's features of the training and validation rows, as ``(features, target, row index)``
    datasets; with ``config.tta`` the validation set also holds the mirror images' features, before the target."""

    def dataset(rows: pd.DataFrame, *mirrored: bool) -> TensorDataset:
        features = [backbone_features(model, cache, rows.cache_index, config.input_size, m) for m in mirrored]
        targets = torch.from_numpy(rows.label.map(class_index).to_numpy(dtype=np.int64, copy=True))
        return TensorDataset(*features, targets, torch.arange(len(rows)))

    return dataset(train_rows, False), dataset(val_rows, False, *([True] if config.tta else []))


def fit_head_on_features(
    dataset_dir: Path,
    fold: int | None,
    out: Path,
    config: TrainConfig,
    model: CoroNet,
    cache: np.ndarray,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    class_index: dict[str, int],
    masks: np.ndarray,
    card: dict | None = None,
    callbacks=(),
    resume: bool = False,
    max_epochs: int | None = None,
    progress: bool = False,
) -> FoldResult:
    """Fine-tune only the dense head (or the last layer) on features the frozen backbone computes once.

    With the backbone frozen and in eval mode its output for a film never changes, so it is
    computed once (no augmentation) and the head trains on it for ``config.epochs`` in seconds
    (:class:`FeatureHeadModule`, in 32-bit), with the profile's optimiser, schedule and label smoothing
    (EMA and mixup do not apply). The Trainer is :func:`coronet.training.fit.fit_fold`'s: the same fold
    directory, metrics, curves, progress and checkpoints (of the head alone), and ``resume``/``max_epochs``
    work as there.
    """
    started = time.perf_counter()
    set_trainable(model, config.train_layers)
    train_set, val_set = feature_datasets(model, cache, train_rows, val_rows, class_index, config)
    logger.info(
        f"fold {fold}: backbone features of {len(train_set) + len(val_set)} films in "
        f"{time.perf_counter() - started:.0f} s; training the {config.train_layers} on them"
    )
    # a small dense head: 32-bit costs nothing and rounds nothing
    return train_fold(
        FoldDir(out),
        FoldParts(dataset_dir, fold, train_rows, val_rows, train_set, val_set),
        config,
        lambda raw: FeatureHeadModule(config, model.head, predictions_path=raw, target_masks=masks),
        {**(card or {}), "head_trained_on_features": True},
        callbacks,
        resume,
        max_epochs,
        progress,
        precision="32-true",
        network=model,
    )
