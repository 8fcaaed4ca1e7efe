"""Training and validation data from a prepared dataset's image cache.

Images are never decoded here: rows of the memory-mapped uint8 cache become
(1, H, W) uint8 tensors, augmented as uint8 by torchvision transforms v2, and
scaled to [0, 1] floats at the end. Augmentation randomness is a function of
(seed, epoch, image index) only, so a resumed run, or a run split over several
processes, sees exactly the same images as an uninterrupted single-process run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler
from torchvision.transforms import v2

from .profiles import TrainConfig


def train_transform(config: TrainConfig) -> v2.Transform:
    """The authors' Keras augmentation (rotation, shift, shear, zoom, flips, constant fill), on uint8 tensors."""
    steps: list[v2.Transform] = [
        v2.RandomAffine(degrees=config.rotation, translate=(config.shift, config.shift),
                        scale=(1 - config.zoom, 1 + config.zoom), shear=config.shear,
                        interpolation=v2.InterpolationMode.BILINEAR, fill=0),
    ]
    if config.flips:
        steps += [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()]
    if config.brightness:
        steps.append(v2.ColorJitter(brightness=config.brightness))
    return v2.Compose(steps)


class CachedXrays(Dataset):
    """(image, label index, row) triples from cache rows; ``image`` is float (1, size, size) in [0, 1]."""

    def __init__(self, cache: np.ndarray, rows: Sequence[int], labels: Sequence[int], size: int,
                 transform: v2.Transform | None = None, seed: int = 0):
        self.cache, self.rows = cache, np.asarray(rows)
        self.labels = torch.from_numpy(np.array(labels, dtype=np.int64))
        self.size, self.transform, self.seed = size, transform, seed
        # a cache of another size (e.g. 150 for a 224 backbone) is resized here, once per image read
        self.resize = v2.Resize((size, size), antialias=True) if cache.shape[1:] != (size, size) else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: int | tuple[int, int]):
        """``key`` is an index, or ``(epoch, index)`` from :class:`EpochShuffleSampler` for augmented data."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image = torch.from_numpy(np.array(self.cache[self.rows[index]]))[None]  # copy out of the memmap
        if self.resize is not None:
            image = self.resize(image)
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(hash((self.seed, epoch, int(self.rows[index]))) & 0x7FFF_FFFF)
                image = self.transform(image)
        return image.float().div_(255), self.labels[index], index


class EpochShuffleSampler(Sampler[int]):
    """A fresh permutation every epoch from (seed, epoch); with ``num_replicas`` > 1, a rank's share.

    Yields ``(epoch, index)`` so the dataset can seed augmentation without shared state
    (works the same in worker processes and after a resume). Shares are padded to equal length (as DistributedSampler does) so every process runs the
    same number of steps; Lightning calls ``set_epoch``.
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
        return iter((self.epoch, index) for index in order[self.rank::self.num_replicas])


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
    parts = [rows.sample(n=min(per_class, len(rows)), random_state=seed)
             for _, rows in table.groupby("label", sort=True)]
    return pd.concat(parts).sort_index()
