"""PNG, JPEG, GIF, BMP, TIFF and WebP decoded by Pillow, to the canonical gray array.

With the plugin that was sniffed, every PNG chunk's CRC checked first, EXIF orientation applied, any mode
converted to gray."""

from __future__ import annotations

import zlib
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .canonical import to_uint8
from .errors import ImageReadError, detail
from .limits import BOMB_ERRORS, bomb_pixels, check_pixel_count, too_large

#: Sniffed format -> the Pillow plugin that should decode it.
PILLOW_FORMATS = {
    "png": "PNG",
    "jpeg": "JPEG",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
    "webp": "WEBP",
}

#: Pillow modes holding more than 8 bits per pixel: min-max stretched.
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def decode_pillow(data: bytes, label: str, fmt: str, max_pixels: int | None = None) -> np.ndarray:
    """The canonical gray array of a file of the sniffed format ``fmt``; an ``ImageReadError`` for any failure."""
    plugin = PILLOW_FORMATS[fmt]
    if fmt == "png":
        check_png_checksums(data, label)
    try:
        # (read_image has made Pillow's bomb warning an error, see decoder_warnings.)
        # `formats` pins the plugin we sniffed, so content that merely
        # looks like one format is never handed to another decoder.
        with Image.open(BytesIO(data), formats=[plugin]) as img:
            # Image.open checks this too, but through the (process-global)
            # warnings filter; checking the header size ourselves keeps the
            # limit in force before decoding whatever the filter state.
            check_pixel_count(label, *img.size, max_pixels)
            img.load()  # decode now, inside the try: truncation fails here
            ImageOps.exif_transpose(img, in_place=True)
            return _pillow_to_gray(img, label)
    except ImageReadError:
        raise
    except BOMB_ERRORS as exc:
        raise ImageReadError(label, too_large(bomb_pixels(exc))) from exc
    except UnidentifiedImageError:
        # Pillow's own message only names the in-memory buffer; say what it means.
        raise ImageReadError(label, f"corrupt or truncated {plugin} header") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is bad input
        # Decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error
        # and more on malformed data; the caller needs one error type.
        text = str(exc).lower()
        if isinstance(exc, EOFError) or "truncated" in text:
            problem = f"truncated {plugin}"
        else:
            problem = f"corrupt {plugin} ({type(exc).__name__}: {detail(exc)})"
        # Chained so a traceback still shows the decoder's own error.
        raise ImageReadError(label, problem) from exc


def check_png_checksums(data: bytes, label: str) -> None:
    """Raise ImageReadError at the first chunk whose CRC does not match its bytes (a damaged file).

    A chunk that runs past the end of the data stops the walk: truncation is the decoder's to report.
    """
    view, pos = memoryview(data), 8
    while pos + 12 <= len(data):
        end = pos + 8 + int.from_bytes(view[pos : pos + 4], "big")
        if end + 4 > len(data):
            return
        kind = bytes(view[pos + 4 : pos + 8])
        if zlib.crc32(view[pos + 4 : end]) != int.from_bytes(view[end : end + 4], "big"):
            name = "".join(chr(c) if chr(c).isalnum() else "?" for c in kind)
            raise ImageReadError(label, f"corrupt PNG (CRC mismatch in the {name} chunk at byte {pos}: damaged file)")
        if kind == b"IEND":
            return
        pos = end + 4


def _pillow_to_gray(img: Image.Image, label: str) -> np.ndarray:
    mode = img.mode
    if mode == "L":
        return np.array(img)  # exact: no rescale for 8-bit gray
    if mode in _HIGH_DEPTH_MODES:
        return to_uint8(np.asarray(img))
    if mode in ("1", "LA", "La"):
        return np.array(img.convert("L"))
    if mode in ("P", "PA"):
        # Via RGBA so that palette transparency is handled (and dropped below)
        # without Pillow's "transparency expressed in bytes" warning.
        img = img.convert("RGBA")
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")  # RGBA, CMYK, YCbCr, LAB, HSV, ...
        except ValueError:
            raise ImageReadError(label, f"unsupported image mode {mode}") from None
    return np.array(img.convert("L"))
