"""Read any supported chest X-ray file into one canonical array.

Canonical form
--------------
Every reader in coronet goes through :func:`read_image`, which returns a
2-D ``uint8`` grayscale array of shape ``(H, W)``, C-contiguous and writable.
Everything downstream (deduplication, preprocessing, the model, the web
service) can therefore assume a single representation, whatever the file was.

Formats are recognised from their content (magic bytes), never from the file
extension, because public X-ray collections contain plenty of mislabelled
files.  The one exception: a DICOM file without its 128-byte preamble and
"DICM" marker has no magic bytes at all, so it is accepted only when its name
ends in ``.dcm`` / ``.dicom``.

Raster formats (PNG, JPEG, GIF, BMP, TIFF, WebP) are decoded by Pillow, with
its decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) left in force and
its warning tier escalated to an error.  EXIF orientation is applied.  Every
PNG chunk's CRC is checked before decoding: Pillow checks those before the
image data only, so a film damaged in its pixels' chunks would be decoded,
wrong, without a word.
Grayscale conversion:

* ``L`` is returned exactly as decoded, so results equal Pillow's
  ``convert("L")`` bit for bit;
* colour modes use Pillow's ITU-R 601-2 luma (``RGB -> L``); alpha is
  ignored, not composited (``RGBA -> RGB -> L``), because a transparent
  radiograph is an artefact of whoever exported it, not part of the image;
* 16-/32-bit integer and float modes are stretched linearly from the
  image's own min..max to 0..255 (a constant image becomes all zeros).

DICOM is decoded by pydicom (first frame only), in the order the standard
defines for display:

1. modality LUT (Rescale Slope/Intercept or Modality LUT Sequence);
2. VOI LUT (VOI LUT Sequence, else Window Center/Width; skipped if absent);
3. scaling to 0..255: the VOI output range when step 2 applied (values
   outside the window clip to 0/255), otherwise the data's min..max, so
   12- and 16-bit images always use the full 8-bit range;
4. MONOCHROME1 is inverted so that bone is bright, as in MONOCHROME2.

Colour DICOM (RGB, YBR, PALETTE COLOR) is converted to RGB and then to luma.

Every unreadable input -- missing, empty, unrecognised, truncated, corrupt,
too large, compressed with a codec that is not installed -- raises
:class:`ImageReadError` with a one-line message; no other exception type
escapes for bad input. Bytes that are no image at all (no format's magic
bytes, and no DICOM pixel data when the name says DICOM) raise its subclass
:class:`UnrecognisedImage`, so that a caller can tell "not an image" from "a
damaged image".

Decoder warnings (Pillow's "Corrupt EXIF data" or "Tag data larger than file",
pydicom's "check that the transfer syntax has been set correctly", ...) never
escape as Python warnings either, which would print library paths beside a
command's one line per file: the warnings a file raises while it is decoded
are collected for that file alone (per thread, so concurrent decodes keep
theirs apart), every time, not once per process. A file that cannot be read
gets them at the end of its one-line :class:`ImageReadError`; for a file that
was read they are handed to the caller (``read_image(..., warned=list)``) and
logged at DEBUG on ``coronet.imageio``. Pillow's decompression-bomb warning is
the exception: it is an error.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import threading
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import CoronetError

__all__ = ["DEFAULT_MAX_PIXELS", "ImageReadError", "UnrecognisedImage", "read_image", "sniff_format"]

#: The pixel limit of a film to predict, shared by ``coronet predict`` and ``coronet serve`` (their
#: ``--max-pixels``). A large CR/DX film is ~4300 x 3500 (15 million pixels); a 16-bit one takes several bytes per
#: pixel while it is decoded. Reading for a dataset keeps Pillow's ``MAX_IMAGE_PIXELS`` (89.5 million) alone.
DEFAULT_MAX_PIXELS = 40_000_000

#: Extensions under which a DICOM file without preamble is still accepted.
_DICOM_SUFFIXES = (".dcm", ".dicom")

#: Sniffed format -> the Pillow plugin that should decode it.
_PILLOW_FORMATS = {
    "png": "PNG",
    "jpeg": "JPEG",
    "gif": "GIF",
    "bmp": "BMP",
    "tiff": "TIFF",
    "webp": "WEBP",
}

#: Pillow modes holding more than 8 bits per pixel: min-max stretched.
_HIGH_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})

_MAX_DETAIL = 160  # characters of an underlying library message we keep

log = logging.getLogger("coronet.imageio")


class ImageReadError(CoronetError, ValueError):
    """The one error raised for every input :func:`read_image` cannot read.

    ``str(err)`` is ``f"{path}: {problem}"`` on a single line; any line break
    in either part is shown as a space so that log lines stay whole.
    """

    def __init__(self, path: str, problem: str) -> None:
        # Both parts go to Exception.args so the error pickles (e.g. across
        # DataLoader worker processes) and unpickles to an equal error.
        super().__init__(path, problem)
        self.path = path
        self.problem = problem

    def __str__(self) -> str:
        return f"{_one_line(self.path)}: {_one_line(self.problem)}"


class UnrecognisedImage(ImageReadError):
    """Bytes that are no image of any format the reader knows (``problem``: "not an image (unrecognised
    format)")."""

    def __init__(self, path: str, problem: str = "not an image (unrecognised format)") -> None:
        super().__init__(path, problem)


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
        data = _read_file(path, label)

    if not data:
        raise ImageReadError(label, "empty file (0 bytes)")

    with _decoder_warnings() as caught:
        try:
            image = _decode(data, label, max_pixels)
        except ImageReadError as error:
            if not caught:
                raise
            raise type(error)(label, f"{error.problem}; {_warned(caught)}") from error.__cause__
    if caught:
        log.debug("%s: %s", label, _warned(caught))
        if warned is not None:
            warned.extend(caught)
    return image


def _decode(data: bytes, label: str, max_pixels: int | None) -> np.ndarray:
    fmt = sniff_format(data)
    if fmt == "dicom":
        return _decode_dicom(data, label, max_pixels=max_pixels)
    if fmt is not None:
        return _decode_pillow(data, label, fmt, max_pixels)
    if label.lower().endswith(_DICOM_SUFFIXES):
        return _decode_dicom(data, label, force=True, max_pixels=max_pixels)
    raise UnrecognisedImage(label)


# --------------------------------------------------------------------------
# decoder warnings

# While any thread decodes, one warnings state is in force process-wide: every UserWarning from the decoders is
# shown (not once per place, so each file gets its own), Pillow's bomb warning is an error, and ``showwarning``
# routes a warning raised by a decoding thread to that thread's list; other threads' warnings go where they went
# before. The state is entered by the first decoding thread and left by the last, under a lock, so concurrent
# decodes (the web service's worker threads) never restore each other's filters halfway, as overlapping
# ``warnings.catch_warnings()`` blocks would.
_DECODER_MODULES = r"(PIL|pydicom|coronet\.data\.imageio)(\.|$)"
_NOT_ABOUT_THE_FILE = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)  # about code: passed on
_warnings_lock = threading.Lock()
_decoding: dict[int, list[str]] = {}  # thread id -> that thread's warnings
_warnings_state: list = []  # the entered catch_warnings, while any thread decodes
_passed_on = [warnings.showwarning]  # where other warnings go: the showwarning in force when decoding began


@contextmanager
def _decoder_warnings() -> Iterator[list[str]]:
    """The warnings this thread raises inside the block: one line each, each once."""
    me = threading.get_ident()
    with _warnings_lock:
        if me in _decoding:  # nested: the outer block collects
            caught = _decoding[me]
            nested = True
        else:
            nested = False
            if not _decoding:
                state = warnings.catch_warnings()
                state.__enter__()
                warnings.filterwarnings("always", category=UserWarning, module=_DECODER_MODULES)
                # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; we want the limit itself
                # to be the hard stop (pydicom hands JPEG frames inside DICOM to Pillow too).
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                _warnings_state[:] = [state]
                if warnings.showwarning is not _route_warning:
                    _passed_on[0] = warnings.showwarning
                warnings.showwarning = _route_warning
            caught = _decoding[me] = []
    try:
        yield caught
    finally:
        if not nested:
            with _warnings_lock:
                del _decoding[me]
                if not _decoding:
                    _warnings_state.pop().__exit__(None, None, None)  # restores the filters and showwarning


def _route_warning(message, category, filename, lineno, file=None, line=None) -> None:
    caught = _decoding.get(threading.get_ident())
    if caught is None or issubclass(category, _NOT_ABOUT_THE_FILE):
        _passed_on[0](message, category, filename, lineno, file, line)
        return
    text = _detail(message if isinstance(message, BaseException) else Warning(message))
    if text not in caught:
        caught.append(text)


def _warned(caught: list[str]) -> str:
    return (
        ("decoder warning: " if len(caught) == 1 else "decoder warnings: ")
        + "; ".join(caught[:3])
        + (f"; and {len(caught) - 3} more" if len(caught) > 3 else "")
    )


# --------------------------------------------------------------------------
# helpers


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D uint8 image to ``size`` x ``size`` (bilinear, aspect not kept).

    The one resize used for the training cache and for prediction, so a model
    sees the same pixels at inference as in training.
    """
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR))


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _detail(exc: BaseException) -> str:
    """A short, single-line description of a library exception."""
    text = _one_line(str(exc)) or type(exc).__name__
    if len(text) > _MAX_DETAIL:
        text = text[: _MAX_DETAIL - 3] + "..."
    return text


#: Bigger files are refused before reading: no chest film comes near it (the largest DICOM here is ~30 MB).
MAX_FILE_BYTES = 1 << 30
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _read_file(path: str | bytes, label: str) -> bytes:
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
        raise ImageReadError(label, f"cannot read file ({_detail(exc)})") from None
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
        raise ImageReadError(label, f"cannot read file ({_detail(exc)})") from None


def _too_large(pixels: int | None, limit: int | None = None) -> str:
    limit = limit or Image.MAX_IMAGE_PIXELS
    count = f"{pixels} pixels, limit {limit}" if pixels else f"limit {limit} pixels"
    return f"image too large ({count}): possible decompression bomb"


# Pillow's two decompression-bomb signals; the warning is escalated to an error
# while we decode (see _decoder_warnings).
_BOMB_ERRORS = (Image.DecompressionBombError, Image.DecompressionBombWarning)


def _bomb_pixels(exc: BaseException) -> int | None:
    match = re.search(r"\((\d+) pixels\)", str(exc))
    return int(match[1]) if match else None


def _check_pixel_count(label: str, width: int, height: int, max_pixels: int | None = None) -> None:
    # Image.MAX_IMAGE_PIXELS is the project-wide size limit (None means somebody
    # deliberately disabled it, which we respect); max_pixels can only lower it.
    limits = [v for v in (Image.MAX_IMAGE_PIXELS, max_pixels) if v is not None]
    limit = min(limits) if limits else None
    if limit is not None and width * height > limit:
        raise ImageReadError(label, _too_large(width * height, limit))


def _to_uint8(arr: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
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


# --------------------------------------------------------------------------
# Pillow formats


def _decode_pillow(data: bytes, label: str, fmt: str, max_pixels: int | None = None) -> np.ndarray:
    plugin = _PILLOW_FORMATS[fmt]
    if fmt == "png":
        _check_png_checksums(data, label)
    try:
        # (read_image has made Pillow's bomb warning an error, see _decoder_warnings.)
        # `formats` pins the plugin we sniffed, so content that merely
        # looks like one format is never handed to another decoder.
        with Image.open(BytesIO(data), formats=[plugin]) as img:
            # Image.open checks this too, but through the (process-global)
            # warnings filter; checking the header size ourselves keeps the
            # limit in force before decoding whatever the filter state.
            _check_pixel_count(label, *img.size, max_pixels)
            img.load()  # decode now, inside the try: truncation fails here
            ImageOps.exif_transpose(img, in_place=True)
            return _pillow_to_gray(img, label)
    except ImageReadError:
        raise
    except _BOMB_ERRORS as exc:
        raise ImageReadError(label, _too_large(_bomb_pixels(exc))) from exc
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
            problem = f"corrupt {plugin} ({type(exc).__name__}: {_detail(exc)})"
        # Chained so a traceback still shows the decoder's own error.
        raise ImageReadError(label, problem) from exc


def _check_png_checksums(data: bytes, label: str) -> None:
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
        return _to_uint8(np.asarray(img))
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


# --------------------------------------------------------------------------
# DICOM


def _decode_dicom(data: bytes, label: str, *, force: bool = False, max_pixels: int | None = None) -> np.ndarray:
    try:
        return _dicom_to_gray(data, label, force, max_pixels)
    except ImageReadError:
        raise
    except _BOMB_ERRORS as exc:
        raise ImageReadError(label, _too_large(_bomb_pixels(exc))) from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad data
        raise ImageReadError(label, f"unreadable DICOM ({type(exc).__name__}: {_detail(exc)})") from exc


def _dicom_to_gray(data: bytes, label: str, force: bool, max_pixels: int | None = None) -> np.ndarray:
    # Imported lazily: only DICOM inputs pay for importing pydicom (an optional extra).
    try:
        import pydicom
    except ModuleNotFoundError:
        raise ImageReadError(
            label, "DICOM needs pydicom, which is not installed: pip install 'coronet[dicom]'"
        ) from None
    from pydicom import uid
    from pydicom.pixels import (
        apply_color_lut,
        apply_modality_lut,
        apply_voi,
        apply_windowing,
        get_decoder,
        pixel_array,
    )

    ds = pydicom.dcmread(BytesIO(data), force=force)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        # A forced parse "succeeds" on almost any bytes, so without pixel data
        # there is no evidence that a preamble-less file was DICOM at all.
        if force:
            raise UnrecognisedImage(label)
        raise ImageReadError(label, "DICOM has no pixel data")

    if "TransferSyntaxUID" not in ds.file_meta:
        # Files without a meta header still say how they were encoded; without
        # a transfer syntax pydicom refuses to decode the pixels.
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            uid.ImplicitVRLittleEndian
            if implicit
            else uid.ExplicitVRLittleEndian
            if little
            else uid.ExplicitVRBigEndian
        )
    tsyntax = ds.file_meta.TransferSyntaxUID
    try:
        available = get_decoder(tsyntax).is_available
    except NotImplementedError:
        available = False
    if not available:
        raise ImageReadError(label, f"DICOM compression not supported: {tsyntax.name}")

    _check_pixel_count(label, int(ds.Columns), int(ds.Rows), max_pixels)
    arr = pixel_array(ds, index=0)  # first frame only; YBR is converted to RGB

    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3:
        return _rgb_to_gray(arr)

    arr = apply_modality_lut(arr, ds)
    lo = hi = None
    voi_lut = ds.get("VOILUTSequence")
    if voi_lut and all(k in voi_lut[0] for k in ("LUTDescriptor", "LUTData")):
        # The LUT's table is indexed by integers; flooring a rescaled float array
        # indexes exactly as pydicom would, minus its float-input warning.
        if arr.dtype.kind == "f":
            arr = np.floor(arr).astype(np.int64)
        arr = apply_voi(arr, ds)
        n_entries, first_mapped = voi_lut[0].LUTDescriptor[0] or 2**16, voi_lut[0].LUTDescriptor[1]
        table = apply_voi(np.arange(first_mapped, first_mapped + n_entries), ds)
        lo, hi = float(table.min()), float(table.max())
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        arr = apply_windowing(arr, ds)
        # pydicom maps the window onto an output range that depends on bit depth,
        # signedness, rescale and modality LUT.  Rather than re-derive its rules,
        # push two extreme values through the same window to learn that range.
        with np.errstate(over="ignore"):
            lo, hi = apply_windowing(np.array([-1e300, 1e300]), ds).tolist()

    out = _to_uint8(arr, lo, hi)
    if photometric == "MONOCHROME1":
        # Inverting after a linear map onto 0..255 equals inverting before it.
        out = 255 - out
    return out


def _rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        # Same luma as the Pillow path, bit for bit.
        return np.array(Image.fromarray(np.ascontiguousarray(rgb[..., :3])).convert("L"))
    luma = rgb[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return _to_uint8(luma)
