"""What the reader refuses before decoding: no regular file, too many bytes, too many pixels, bombs."""

from __future__ import annotations

import os
import re
import stat

from PIL import Image

from .errors import ImageReadError, detail

#: The pixel limit of a film to predict, shared by ``coronet predict`` and ``coronet serve`` (their
#: ``--max-pixels``). A large CR/DX film is ~4300 x 3500 (15 million pixels); a 16-bit one takes several bytes per
#: pixel while it is decoded. Reading for a dataset keeps Pillow's ``MAX_IMAGE_PIXELS`` (89.5 million) alone.
DEFAULT_MAX_PIXELS = 40_000_000

#: Bigger files are refused before reading: no chest film comes near it (the largest DICOM here is ~30 MB).
MAX_FILE_BYTES = 1 << 30
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)

# Pillow's two decompression-bomb signals; the warning is escalated to an error
# while we decode (see decoderwarnings.decoder_warnings).
BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def read_file(path: str | bytes, label: str) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_FILE_BYTES`; anything else is an ``ImageReadError``.

    Checked before opening: a FIFO would block forever and ``/dev/zero`` never ends.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise ImageReadError(label, "file not found") from None
    except PermissionError:
        raise ImageReadError(label, "permission denied") from None
    except OSError as exc:  # a symlink loop, a name too long ...
        raise ImageReadError(label, f"cannot read file ({detail(exc)})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = next((text for test, text in _KINDS if test(info.st_mode)), "not a regular file")
        raise ImageReadError(label, f"is {kind}, not a regular file")
    if info.st_size > MAX_FILE_BYTES:
        raise ImageReadError(label, f"file too large ({info.st_size} bytes, limit {MAX_FILE_BYTES})")
    try:
        with open(path, "rb") as fh:
            return fh.read(MAX_FILE_BYTES + 1)
    except PermissionError:
        raise ImageReadError(label, "permission denied") from None
    except OSError as exc:
        raise ImageReadError(label, f"cannot read file ({detail(exc)})") from None


def check_pixel_count(label: str, width: int, height: int, max_pixels: int | None = None) -> None:
    """Refuse an image of more pixels than Pillow's ``MAX_IMAGE_PIXELS`` or ``max_pixels``, from its header."""
    # Image.MAX_IMAGE_PIXELS is the project-wide size limit (None means somebody
    # deliberately disabled it, which we respect); max_pixels can only lower it.
    limits = [v for v in (Image.MAX_IMAGE_PIXELS, max_pixels) if v is not None]
    limit = min(limits) if limits else None
    if limit is not None and width * height > limit:
        raise ImageReadError(label, too_large(width * height, limit))


def too_large(pixels: int | None, limit: int | None = None) -> str:
    """The problem of an image over the pixel limit (default Pillow's), naming its pixels where known."""
    limit = limit or Image.MAX_IMAGE_PIXELS
    count = f"{pixels} pixels, limit {limit}" if pixels else f"limit {limit} pixels"
    return f"image too large ({count}): possible decompression bomb"


def bomb_pixels(exc: BaseException) -> int | None:
    """The pixel count a Pillow decompression-bomb error names, if it names one."""
    match = re.search(r"\((\d+) pixels\)", str(exc))
    return int(match[1]) if match else None
