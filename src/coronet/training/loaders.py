"""What one fold trains and validates on: its rows of the manifest, and the loaders that feed the datasets made of
them to Lightning in every process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Sampler, TensorDataset

from ..data.cache import cache_size, load_cache
from ..data.dataset import CachedXrays, EpochShuffleSampler, ShardSampler, stratified_subset
from ..data.leaveout import held_out, not_trained_on
from ..layout import DatasetDir
from ..tasks import label_targets
from .profiles import TrainConfig


def load_manifest(dataset_dir: Path, classes, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
    """The dataset's manifest (or the given one), checked to hold only labels among ``classes`` (or partial
    labels made of them, :data:`coronet.tasks.PARTIAL_LABELS`)."""
    if manifest is None:
        manifest = DatasetDir(dataset_dir).read_manifest()
    try:
        label_targets(classes, manifest.label)
    except ValueError as error:
        raise ValueError(f"{dataset_dir}: {error}") from None
    return manifest


def fold_rows(
    dataset_dir: Path, fold: int | None, config: TrainConfig, manifest: pd.DataFrame | None
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, dict[str, int], np.ndarray]:
    """(image cache, training rows, validation rows, label -> target index, target masks) of one fold
    (``None``: all rows train). Targets are the classes, then any partial labels (:func:`label_targets`)."""
    manifest = load_manifest(dataset_dir, config.classes, manifest)
    names, masks = label_targets(config.classes, manifest.label)
    class_index = {name: k for k, name in enumerate(names)}
    cache = load_cache(dataset_dir, cache_size(dataset_dir, config.input_size))
    train_rows = training_rows(manifest, fold, config)
    val_rows = manifest[(manifest.fold == fold) & ~held_out(manifest, config.leave_out)]
    if train_rows.empty or (val_rows.empty and fold is not None):
        raise ValueError(f"fold {fold}: empty training or validation part (folds: {sorted(manifest.fold.unique())})")
    return cache, train_rows, val_rows, class_index, masks


def training_rows(manifest: pd.DataFrame, fold: int | None, config: TrainConfig) -> pd.DataFrame:
    """The rows fold ``fold``'s model trains on: the other folds' (every row for ``None``), without the films of
    ``config.leave_out`` and those linked to them (:func:`coronet.data.leaveout.not_trained_on`), then
    ``config.train_per_class`` of each label."""
    part = manifest[(manifest.fold != fold) & ~not_trained_on(manifest, config.leave_out)]
    return stratified_subset(part, config.train_per_class, config.seed)


@dataclass
class FoldParts:
    """What one fold trains and validates on: rows of the manifest and the datasets made of them."""

    dataset_dir: Path
    fold: int | None
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    train_set: CachedXrays | TensorDataset
    val_set: CachedXrays | TensorDataset


class _Indices(Sampler[int]):
    """A sampler's ``(epoch, index)`` pairs as plain indices, for a dataset that needs no epoch (a TensorDataset)."""

    def __init__(self, sampler: EpochShuffleSampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it on the loader's sampler
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return (index for _, index in self.sampler)


class FoldLoaders(pl.LightningDataModule):
    """Builds the loaders inside each process, so samplers know their rank (DDP). Films (:class:`CachedXrays`)
    are read by ``config.num_workers`` workers; a ``TensorDataset`` (features in memory) by this process."""

    def __init__(
        self, train_set: CachedXrays | TensorDataset, val_set: CachedXrays | TensorDataset, config: TrainConfig
    ):
        super().__init__()
        self.train_set, self.val_set, self.config = train_set, val_set, config

    def _loader(self, dataset, sampler, batch_size):
        workers = 0 if isinstance(dataset, TensorDataset) else self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self):
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = EpochShuffleSampler(len(self.train_set), self.config.seed, world, rank)
        if isinstance(self.train_set, TensorDataset):
            return self._loader(self.train_set, _Indices(sampler), self.config.batch_size)
        return self._loader(self.train_set, sampler, self.config.batch_size)

    def val_dataloader(self):
        world, rank = self.trainer.world_size, self.trainer.global_rank
        return self._loader(self.val_set, ShardSampler(len(self.val_set), world, rank), max(32, self.config.batch_size))
