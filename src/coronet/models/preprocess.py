"""What the network does to a film before the backbone sees it: equalise the histogram, crop to the lung field.

Both are levers against acquisition shortcuts (:mod:`coronet.training.profiles`: ``crop``,
``equalize``). They live inside the network (:class:`coronet.models.coronet.CoroNet` applies
:class:`FilmPreprocess` first), so training, validation, ``predict``, the ONNX export, ``serve``
and Grad-CAM all apply exactly the same operations, and the model card records them.

* crop: keep a box of the film (fractions of its width and height), resized back to the input
  size. ``lungs`` is the audit's lung field (:data:`LUNG_BOX`): the middle three quarters of a
  frontal film's width, from the apices to the diaphragm domes; borders, corners, shoulders,
  labels and markers fall outside it.
* equalize: global histogram equalisation of each (whole) film over 256 grey levels, so a scanner's
  or a website's intensity processing no longer tells the collection apart (the output's histogram
  is close to flat whatever the input's was). It comes before the crop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: The lung field as (x0, y0, x1, y1) fractions of the square film: the audit's default box.
LUNG_BOX = (0.12, 0.08, 0.88, 0.85)
#: Named crops (``TrainConfig.crop``); anything else is ``X0,Y0,X1,Y1``.
CROPS = {"none": None, "lungs": LUNG_BOX}
LEVELS = 256


def parse_crop(crop: str | Sequence[float] | None) -> tuple[float, float, float, float] | None:
    """``"none"`` / ``None`` -> None, ``"lungs"`` -> :data:`LUNG_BOX`, ``"0.1,0.1,0.9,0.9"`` (or 4 numbers) -> the box.

    A box is fractions with ``0 <= x0 < x1 <= 1`` and ``0 <= y0 < y1 <= 1``; anything else is a ``ValueError``.
    """
    if crop is None or (isinstance(crop, str) and crop.strip().lower() in CROPS):
        return CROPS[crop.strip().lower()] if isinstance(crop, str) else None
    try:
        box = tuple(float(v) for v in (crop.split(",") if isinstance(crop, str) else crop))
    except ValueError:
        box = ()
    if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise ValueError(f"crop {crop!r}: expected none, lungs or X0,Y0,X1,Y1 fractions with X0 < X1 and Y0 < Y1")
    return box  # type: ignore[return-value]


def crop_box(images: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
    """The ``box`` (fractions) of each (N, C, H, W) film, resized back to H x W (bilinear)."""
    height, width = images.shape[-2:]
    x0, y0 = int(round(box[0] * width)), int(round(box[1] * height))
    x1, y1 = max(x0 + 1, int(round(box[2] * width))), max(y0 + 1, int(round(box[3] * height)))
    inside = images[..., y0:y1, x0:x1]
    return F.interpolate(inside, size=(int(height), int(width)), mode="bilinear", align_corners=False)


def equalize_histogram(images: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation of each (N, C, H, W) film in [0, 1] over 256 levels (each channel on its own).

    Level ``v`` becomes ``(cdf(v) - cdf_min) / (pixels - cdf_min)``, where ``cdf_min`` counts the
    darkest level present: the darkest pixels map to 0, the brightest to 1. A constant film maps to 0.
    """
    shape = images.shape
    levels = (images.float().clamp(0, 1) * (LEVELS - 1)).round().long().flatten(2)  # (N, C, P)
    ones = torch.ones_like(levels, dtype=torch.float32)
    histogram = torch.zeros(*levels.shape[:2], LEVELS, device=images.device).scatter_add(2, levels, ones)
    cdf = histogram.cumsum(2)
    pixels = float(levels.shape[-1])
    darkest = torch.where(histogram > 0, cdf, torch.full_like(cdf, pixels)).amin(2, keepdim=True)
    mapped = (cdf - darkest) / (pixels - darkest).clamp_min(1.0)
    return mapped.gather(2, levels).reshape(shape).to(images.dtype)


class FilmPreprocess(nn.Module):
    """The crop and the equalisation a network was trained with (each optional; none: the identity)."""

    def __init__(self, crop: Sequence[float] | None = None, equalize: bool = False):
        super().__init__()
        self.crop = tuple(float(v) for v in crop) if crop else None
        self.equalize = bool(equalize)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # Equalise first: a film read from disk is whole grey levels there, so every runtime (PyTorch, ONNX
        # Runtime) puts each pixel in the same histogram bin; after the crop's interpolation a rounding
        # difference of 1e-7 could move a pixel to the next level.
        if self.equalize:
            images = equalize_histogram(images)
        if self.crop is not None:
            images = crop_box(images, self.crop)
        return images

    @property
    def active(self) -> bool:
        return self.crop is not None or self.equalize

    def describe(self) -> dict:
        """How the card records it: ``{"crop": [x0, y0, x1, y1] | None, "equalize": bool}``."""
        return {"crop": list(self.crop) if self.crop else None, "equalize": self.equalize}

    def extra_repr(self) -> str:
        return f"crop={self.crop}, equalize={self.equalize}"


__all__ = ["CROPS", "FilmPreprocess", "LUNG_BOX", "crop_box", "equalize_histogram", "parse_crop"]
