"""``read_image``: any supported file to the canonical array, its format recognised from its content.

The format by :func:`sniff_format`, the decoder's warnings collected for the file alone."""

from __future__ import annotations

import logging
import os

import numpy as np

from .decoderwarnings import decoder_warnings, warned_text
from .dicom import decode_dicom
from .errors import ImageReadError, UnrecognisedImage
from .limits import read_file
from .pillow import decode_pillow

#: Extensions under which a DICOM file without preamble is still accepted.
_DICOM_SUFFIXES = (".dcm", ".dicom")

# The module's old name: the logger callers and their log settings know.
log = logging.getLogger("coronet.imageio")


def read_image(
    source: str | os.PathLike | bytes,
    *,
    name: str | None = None,
    max_pixels: int | None = None,
    warned: list[str] | None = None,
) -> np.ndarray:
    """Decode an X-ray file into the canonical 2-D ``uint8`` grayscale array.

    ``source`` is a path or the file's raw bytes (``bytes``, ``bytearray`` or
    ``memoryview``).  ``name`` labels the input in error messages (and is
    what the DICOM-without-preamble rule looks at); it defaults to the path,
    or ``"<bytes>"`` for bytes input.  ``max_pixels`` lowers the pixel-count
    limit for this call below Pillow's project-wide ``Image.MAX_IMAGE_PIXELS``
    (a server bounds the memory one upload can take: a 16-bit film is decoded
    through float copies of 4 bytes per pixel).  ``warned``, when given, gets
    the decoder's warnings about a file that was read (one line each, each
    once); they are never shown as Python warnings.

    Raises :class:`ImageReadError` for any input that cannot be read; the
    decoder's warnings, if any, end its message.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name if name is not None else "<bytes>"
        data = bytes(source)
    else:
        path = os.fspath(source)
        label = name if name is not None else os.fsdecode(path)
        data = read_file(path, label)

    if not data:
        raise ImageReadError(label, "empty file (0 bytes)")

    with decoder_warnings() as caught:
        try:
            image = _decode(data, label, max_pixels)
        except ImageReadError as error:
            if not caught:
                raise
            raise type(error)(label, f"{error.problem}; {warned_text(caught)}") from error.__cause__
    if caught:
        log.debug("%s: %s", label, warned_text(caught))
        if warned is not None:
            warned.extend(caught)
    return image


def sniff_format(data: bytes) -> str | None:
    """Name the image format of ``data`` from its magic bytes alone.

    Returns one of ``'png'``, ``'jpeg'``, ``'dicom'``, ``'gif'``, ``'bmp'``,
    ``'tiff'``, ``'webp'``, or ``None`` when nothing matches.
    """
    head = bytes(data[:132])
    # DICOM first: its 128-byte preamble is free-form and may itself look like
    # another format (dual-personality DICOM/TIFF files exist).
    if head[128:132] == b"DICM":
        return "dicom"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    return None


def _decode(data: bytes, label: str, max_pixels: int | None) -> np.ndarray:
    fmt = sniff_format(data)
    if fmt == "dicom":
        return decode_dicom(data, label, max_pixels=max_pixels)
    if fmt is not None:
        return decode_pillow(data, label, fmt, max_pixels)
    if label.lower().endswith(_DICOM_SUFFIXES):
        return decode_dicom(data, label, force=True, max_pixels=max_pixels)
    raise UnrecognisedImage(label)
