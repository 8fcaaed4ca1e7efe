"""Training and validation data from a prepared dataset's image cache.

Images are never decoded here: rows of the memory-mapped uint8 cache become
(1, H, W) uint8 tensors, batched as they are (a quarter of the bytes of floats), and
augmented, resized and scaled to [0, 1] on the training device by
:mod:`coronet.augment`, one batch at a time. Each item carries its augmentation seed,
a function of (seed, epoch, image) only, so a resumed run, or a run split over several
processes, sees exactly the same images as an uninterrupted single-process run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from .augment import augmentation_seed


class CachedXrays(Dataset):
    """(image, label index, position, augmentation seed) from cache rows; ``image`` is uint8 (1, H, W).

    ``seed`` is -1 for an item asked for by plain index (validation: never augmented).
    """

    def __init__(self, cache: np.ndarray, rows: Sequence[int], labels: Sequence[int], seed: int = 0):
        self.cache, self.rows = cache, np.asarray(rows)
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))
        self.seed = seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]):
        """``key`` is an index, or ``(epoch, index)`` from :class:`EpochShuffleSampler` for augmented data."""
        epoch, index = key if isinstance(key, tuple) else (None, key)
        image = torch.from_numpy(np.array(self.cache[self.rows[index]]))[None]  # copy out of the memmap
        seed = -1 if epoch is None else augmentation_seed(self.seed, epoch, int(self.rows[index]))
        return image, self.labels[index], index, seed


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation every epoch from (seed, epoch); with ``num_replicas`` > 1, a rank's share.

    Yields ``(epoch, index)`` so the dataset can seed augmentation without shared state
    (works the same in worker processes and after a resume). Shares are padded to equal length (as
    DistributedSampler does) so every process runs the same number of steps; Lightning calls ``set_epoch``.
    """

    def __init__(self, size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0):
        self.size, self.seed, self.num_replicas, self.rank = size, seed, num_replicas, rank
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self.size / self.num_replicas)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        order += order[: len(self) * self.num_replicas - self.size]
        return iter((self.epoch, index) for index in order[self.rank :: self.num_replicas])


class ShardSampler(Sampler[int]):
    """Every index exactly once over all ranks, in order: rank r gets r, r + R, r + 2R ... (no padding)."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0):
        self.indices = list(range(rank, size, num_replicas))

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        return iter(self.indices)


def stratified_subset(table: pd.DataFrame, per_class: int | None, seed: int) -> pd.DataFrame:
    """At most ``per_class`` rows of each label, drawn with ``seed`` (all rows when ``per_class`` is None)."""
    if per_class is None:
        return table
    parts = [
        rows.sample(n=min(per_class, len(rows)), random_state=seed) for _, rows in table.groupby("label", sort=True)
    ]
    return pd.concat(parts).sort_index()
