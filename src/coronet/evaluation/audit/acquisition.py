"""Test 3: a classifier on acquisition features that carry no diagnosis (file, upload variant, borders, histogram).

If features that know nothing of the lungs (a film's size, format, border brightness) predict its label as well
as CoroNet does, the labels of the data set can be read without looking at the lungs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...layout import predictions_table

#: Pillow mode -> bits per channel (modes not listed: unknown).
BIT_DEPTHS = {"1": 1, "L": 8, "P": 8, "RGB": 8, "RGBA": 8, "CMYK": 8, "LA": 8, "I;16": 16, "I": 32, "F": 32}
#: Global histogram percentiles of the cached film.
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
#: The categorical features, one-hot encoded.
CATEGORICAL = ["mode", "format", "source_variant"]


def acquisition_features(manifest: pd.DataFrame, cache: np.ndarray, data: Path | None = None) -> pd.DataFrame:
    """Features that carry no diagnosis, one row per manifest row.

    From the file: original width, height, aspect ratio, Pillow mode, bit depth, format. From the
    manifest: the Kaggle ``source_variant`` (original or the uploader's 224 x 224 copy). From the
    cached film: mean and standard deviation of the outer border (5 %) and of each corner
    (10 % square), and global histogram percentiles (1, 5, 25, 50, 75, 95, 99).
    """
    cached = np.asarray(cache[manifest["cache_index"].to_numpy()], dtype=np.float32)
    size = cached.shape[-1]
    edge, corner = _edge(size, border=max(1, size // 20)), max(1, size // 10)
    rows = []
    for film, row in zip(cached, manifest.itertuples(index=False)):
        height, width = float(getattr(row, "height", np.nan)), float(getattr(row, "width", np.nan))
        rows.append(
            {
                "width": width,
                "height": height,
                "aspect": width / height if height else np.nan,
                **_file_features(_film_path(row, data)),
                "source_variant": str(getattr(row, "source_variant", "") or "none"),
                **_pixel_features(film, edge, corner),
            }
        )
    return pd.get_dummies(pd.DataFrame(rows), columns=CATEGORICAL, dtype=float)


def _edge(size: int, border: int) -> np.ndarray:
    """(size, size) bool: the outer ``border`` pixels on every side."""
    edge = np.zeros((size, size), dtype=bool)
    edge[:border], edge[-border:], edge[:, :border], edge[:, -border:] = True, True, True, True
    return edge


def _film_path(row, data: Path | None) -> Path:
    """The film's file: its manifest path, or, where that is gone, its ``relpath`` under the data directory."""
    path = Path(row.path)
    if data is not None and not path.is_file() and isinstance(getattr(row, "relpath", None), str):
        path = Path(data) / row.relpath
    return path


def _file_features(path: Path) -> dict:
    """Pillow mode, bit depth and format as the file's header gives them (an unreadable file: unknown)."""
    from PIL import Image

    mode, bits, kind = "unknown", np.nan, path.suffix.lower().lstrip(".")
    try:
        with Image.open(path) as image:
            mode, kind = image.mode, (image.format or kind).lower()
            bits = BIT_DEPTHS.get(image.mode, np.nan)
    except (OSError, ValueError):
        pass
    return {"mode": mode, "bit_depth": bits, "format": kind}


def _pixel_features(film: np.ndarray, edge: np.ndarray, corner: int) -> dict:
    """The border's and each corner's mean and standard deviation, and the histogram's percentiles."""
    features = {"border_mean": film[edge].mean(), "border_std": film[edge].std()}
    for name, part in (
        ("tl", film[:corner, :corner]),
        ("tr", film[:corner, -corner:]),
        ("bl", film[-corner:, :corner]),
        ("br", film[-corner:, -corner:]),
    ):
        features[f"corner_{name}_mean"], features[f"corner_{name}_std"] = part.mean(), part.std()
    for q, value in zip(PERCENTILES, np.percentile(film, PERCENTILES)):
        features[f"p{q}"] = value
    return features


def acquisition_predictions(manifest: pd.DataFrame, features: pd.DataFrame, classes, seed: int = 0) -> pd.DataFrame:
    """Fold-wise predictions of a gradient-boosting classifier on ``features`` (trained on the other folds)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    probabilities = np.zeros((len(manifest), len(classes)))
    labels = manifest["label"].map({c: k for k, c in enumerate(classes)}).to_numpy()
    informative = [c for c in features.columns if features[c].notna().any() and features[c].nunique() > 1]
    x = features[informative].to_numpy(dtype=float) if informative else np.zeros((len(features), 1))
    for fold in sorted(manifest["fold"].unique()):
        test = manifest["fold"].to_numpy() == fold
        model = HistGradientBoostingClassifier(random_state=seed, max_iter=200, learning_rate=0.1, early_stopping=False)
        model.fit(x[~test], labels[~test])
        probabilities[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    return predictions_table(manifest, probabilities, list(classes))
