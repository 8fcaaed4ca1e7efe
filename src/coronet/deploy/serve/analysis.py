"""The model work for one upload: decode the film, classify it, draw its Grad-CAM (blocking: run in worker threads)."""

from __future__ import annotations

import base64

import numpy as np

from ...data.imageio import DEFAULT_MAX_PIXELS, ImageReadError, UnrecognisedImage, read_image, sniff_format
from ..explain import fit, overlay, png_bytes
from ..predict import Predictor
from .errors import ApiError

__all__ = ["ACCEPTED_FORMATS", "classify", "decode", "grad_cam"]

ACCEPTED_FORMATS = ("png", "jpeg", "dicom")
_PREVIEW_SIDE = 512
_NOTICE = "Research software. Not a medical device; not for diagnosis."  # for cards written without one


def decode(data: bytes, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """The film in an uploaded file; else :class:`ApiError`: 400 empty, 415 not a PNG, JPEG or DICOM image
    (whatever the file's name says), 422 an image that cannot be read."""
    if not data:
        raise ApiError(400, f"{name}: empty file (0 bytes)")
    kind = sniff_format(data)
    if kind is not None and kind not in ACCEPTED_FORMATS:
        raise ApiError(415, _not_accepted(name, f"{kind.upper()} image"))
    try:
        return read_image(data, name=name, max_pixels=max_pixels)
    except UnrecognisedImage:  # no magic bytes, nor, under a .dcm name, any DICOM pixel data
        raise ApiError(415, _not_accepted(name, "unrecognised content")) from None
    except ImageReadError as error:
        raise ApiError(422, f"{name}: {error.problem}") from None


def _not_accepted(name: str, found: str) -> str:
    return f"{name}: not a PNG, JPEG or DICOM image ({found}; the format is read from the bytes)"


def classify(predictor: Predictor, film: np.ndarray, name: str, *, preview: bool) -> tuple[dict, int]:
    """The answer for one decoded film, and the predicted class's index."""
    probabilities = predictor.probabilities([film])[0]
    index = int(np.argmax(probabilities))
    info = predictor.info
    result = {
        "file": name,
        "predicted_class": predictor.classes[index],
        "probabilities": {c: float(p) for c, p in zip(predictor.classes, probabilities)},
        "model": {key: info[key] for key in ("name", "version", "weights_sha256", "runtime")},
        "image_size": {"width": int(film.shape[1]), "height": int(film.shape[0])},
        "notice": predictor.card.get("notice") or _NOTICE,
    }
    if preview:
        result["image"] = _b64_png(fit(film, _PREVIEW_SIDE))
    return result, index


def grad_cam(predictor: Predictor, film: np.ndarray, index: int) -> dict:
    """The Grad-CAM overlay of class ``index`` for a decoded film."""
    heatmap = predictor.heatmaps([film], [index])[0]
    return {"cam": _b64_png(overlay(film, heatmap, max_side=_PREVIEW_SIDE)), "cam_class": predictor.classes[index]}


def _b64_png(image: np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")
