"""What a runtime is measured on: a fold's films as model input (checked, calibrated), and its speed.

The check films are the fold's validation films with a class label (:func:`fold_films`); the timing is the
model call alone on a ready input (:func:`measure_speed`), so that decoding and resizing, the same for every
runtime, do not blur the difference.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...layout import MANIFEST
from .runners import model_input

THROUGHPUT_BATCH = 32


@dataclass(frozen=True)
class CheckFilms:
    """A fold's films as model input: validation films with their class labels, and training films to calibrate."""

    images: np.ndarray  # (N, 1, S, S) float32 in [0, 1]: the fold's validation films labelled with a class
    labels: np.ndarray  # (N,) class indices
    calibration: np.ndarray  # (M, 1, S, S) float32: some of the fold's training films
    dataset: str
    fold: int


def fold_films(
    dataset: str | os.PathLike,
    fold: int,
    classes: Sequence[str],
    input_size: int,
    *,
    calibration_films: int = 100,
    seed: int = 0,
) -> CheckFilms:
    """Fold ``fold`` of a prepared dataset (``coronet data prepare``): its validation films (``fold == K``) whose
    label is one of ``classes`` (partial labels such as ``pneumonia`` are left out: they have no 4-class answer),
    and ``calibration_films`` of its training films (``fold != K``, drawn with ``seed``), read from the image
    cache and resized as ``predict`` resizes a film."""
    import pandas as pd

    from ...data.prepare import cache_size, load_cache

    dataset = Path(dataset)
    try:
        manifest = pd.read_csv(dataset / MANIFEST)
    except (OSError, ValueError) as error:
        raise ValueError(f"{dataset}: no readable {MANIFEST} (a prepared dataset: coronet data prepare)") from error
    missing = {"fold", "cache_index", "label"} - set(manifest.columns)
    if missing:
        raise ValueError(f"{dataset / MANIFEST}: no column(s) {', '.join(sorted(missing))}")
    folds = sorted(int(f) for f in manifest["fold"].dropna().unique())
    if fold not in folds:
        raise ValueError(f"{dataset}: no fold {fold} (folds: {', '.join(map(str, folds))})")
    validation = manifest[(manifest["fold"] == fold) & manifest["label"].isin(list(classes))]
    training = manifest[manifest["fold"] != fold]
    if validation.empty:
        raise ValueError(f"{dataset}: fold {fold} has no validation film labelled {', '.join(classes)}")
    size = cache_size(dataset, input_size)
    cache = load_cache(dataset, size)

    def films(rows) -> np.ndarray:
        images = np.asarray(cache[rows["cache_index"].to_numpy()])
        if size == input_size:
            return (images[:, None] / np.float32(255.0)).astype(np.float32)
        return model_input(list(images), input_size)

    picked = np.random.default_rng(seed).permutation(len(training))[: max(0, calibration_films)]
    return CheckFilms(
        images=films(validation),
        labels=validation["label"].map({c: k for k, c in enumerate(classes)}).to_numpy(dtype=np.int64),
        calibration=films(training.iloc[np.sort(picked)]),
        dataset=str(dataset),
        fold=int(fold),
    )


def probabilities(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int = 32) -> np.ndarray:
    """``run``'s probabilities for every film of ``images``, ``batch`` films per call."""
    return np.concatenate([run(images[start : start + batch]) for start in range(0, len(images), batch)])


def measure_speed(run: Callable[[np.ndarray], np.ndarray], films: np.ndarray, repeats: int = 10) -> dict:
    """Latency of one film (the model call on a ready input, median of ``repeats``) and images/s at batch 32
    (best of ``max(3, repeats // 2)`` batches), after a warm-up."""
    one = films[:1]
    batch = np.ascontiguousarray(np.resize(films, (THROUGHPUT_BATCH, *films.shape[1:])))  # films repeated to 32

    def timed(inputs: np.ndarray, times: int) -> list[float]:
        seconds = []
        for _ in range(times):
            start = time.perf_counter()
            run(inputs)
            seconds.append(time.perf_counter() - start)
        return seconds

    timed(batch, 1)
    timed(one, 2)
    latency = statistics.median(timed(one, max(1, repeats)))
    best = min(timed(batch, max(3, repeats // 2)))
    return {
        "latency_ms": round(latency * 1000, 3),
        "images_per_s": round(THROUGHPUT_BATCH / best, 2),
        "repeats": max(1, repeats),
    }
