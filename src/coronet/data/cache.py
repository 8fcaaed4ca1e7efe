"""A prepared dataset's image cache, ``images-<size>.npy``: written once by preparation, memory-mapped read-only
by training, evaluation and the runtime measurements (row = the manifest's ``cache_index``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..layout import CACHE_TEMPLATE, PREPARE_RECORD, atomic_path


def write_cache(path: Path, images: list[np.ndarray]) -> None:
    """Write ``images`` (equal-sized uint8 arrays) as one ``.npy`` file, atomically."""
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(images), *images[0].shape))
        for k, image in enumerate(images):
            array[k] = image
        array.flush()
        del array


def cache_size(dataset_dir: str | os.PathLike, input_size: int) -> int:
    """The image cache to read for a model of ``input_size``: that size if the dataset has it, else its own."""
    if (Path(dataset_dir) / CACHE_TEMPLATE.format(size=input_size)).is_file():
        return input_size
    try:
        return int(json.loads((Path(dataset_dir) / PREPARE_RECORD).read_text())["config"]["image_size"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{dataset_dir}: not a prepared dataset (no readable {PREPARE_RECORD})") from error


def load_cache(dataset_dir: str | os.PathLike, size: int = 150) -> np.ndarray:
    """The dataset's decoded image cache, memory-mapped read-only (row = manifest ``cache_index``)."""
    path = Path(dataset_dir) / CACHE_TEMPLATE.format(size=size)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no {size}x{size} image cache; run `coronet data prepare --image-size {size}`")
    return np.load(path, mmap_mode="r")
