"""The canonical array: any depth or colour mapped to 8-bit gray, and the one resize every film goes through."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D uint8 image to ``size`` x ``size`` (bilinear, aspect not kept).

    The one resize used for the training cache and for prediction, so a model
    sees the same pixels at inference as in training.
    """
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def to_uint8(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map ``lo -> 0`` and ``hi -> 255`` linearly, clipping outside the range.

    Without ``lo``/``hi`` the data's own finite min..max is used.  A constant
    image (``lo == hi``) maps to zeros.  ``hi < lo`` is allowed and inverts.
    """
    # float32: exact for 16-bit integers, half the memory of float64 on large films
    arr = np.asarray(arr, dtype=np.float32)
    if lo is None or hi is None:
        finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
        if finite.size == 0:
            return np.zeros(arr.shape, dtype=np.uint8)
        lo, hi = float(finite.min()), float(finite.max())
    if hi == lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    out = (arr - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    np.clip(out, 0.0, 255.0, out=out)
    np.nan_to_num(out, copy=False, nan=0.0)
    return np.ascontiguousarray(np.rint(out), dtype=np.uint8)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma of an RGB(A) array (alpha ignored): Pillow's for 8 bits, stretched to 0..255 for more."""
    if rgb.dtype == np.uint8:
        # Same luma as the Pillow path, bit for bit.
        return np.array(Image.fromarray(np.ascontiguousarray(rgb[..., :3])).convert("L"))
    luma = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return to_uint8(luma)
