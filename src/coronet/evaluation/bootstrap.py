"""95 % intervals by bootstrap over patients: all of a patient's images are drawn together, so films of one
person never count as independent evidence. Deterministic for a given seed."""

from __future__ import annotations

import numpy as np
import pandas as pd


def _patient_resampler(predictions: pd.DataFrame, seed: int):
    """Yield row positions of successive patient-level bootstrap samples."""
    codes, _ = pd.factorize(predictions["patient_id"])
    order = np.argsort(codes, kind="stable")
    counts = np.bincount(codes)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = np.random.default_rng(seed)
    while True:
        draw = rng.integers(0, len(counts), size=len(counts))
        n_d = counts[draw]
        ends = np.cumsum(n_d)
        offsets = np.repeat(starts[draw] - (ends - n_d), n_d) + np.arange(ends[-1] if len(ends) else 0)
        yield order[offsets]


def bootstrap_cis(
    predictions: pd.DataFrame, statistics: dict, n: int = 1000, seed: int = 0, level: float = 0.95
) -> dict:
    """Like :func:`bootstrap_ci` for several statistics sharing the same resamples: name -> (point, low, high)."""
    samples = {name: np.empty(n) for name in statistics}
    resample = _patient_resampler(predictions, seed)
    for i in range(n):
        part = predictions.iloc[next(resample)]
        for name, stat in statistics.items():
            samples[name][i] = stat(part)
    alpha = (1 - level) / 2 * 100
    out = {}
    for name, stat in statistics.items():
        s = samples[name][~np.isnan(samples[name])]
        low, high = np.percentile(s, [alpha, 100 - alpha]) if len(s) else (np.nan, np.nan)
        out[name] = (float(stat(predictions)), float(low), float(high))
    return out


def bootstrap_ci(
    predictions: pd.DataFrame, statistic, n: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(point, low, high): percentile interval of ``statistic`` over ``n`` resamples of patients.

    Patients (``patient_id``) are drawn with replacement and all their images come along, so images
    of one patient never count as independent evidence.  Deterministic for a given ``seed``.
    """
    return bootstrap_cis(predictions, {"stat": statistic}, n=n, seed=seed, level=level)["stat"]


__all__ = ["bootstrap_ci", "bootstrap_cis"]
