"""DICOM decoded by pydicom (first frame only) in the standard's display order, to the canonical gray array.

Modality LUT, VOI LUT or window, scaling to 0..255, MONOCHROME1 inverted; colour converted to RGB and then to
luma."""

from __future__ import annotations

from io import BytesIO

import numpy as np

from .canonical import rgb_to_gray, to_uint8
from .errors import ImageReadError, UnrecognisedImage, detail
from .limits import BOMB_ERRORS, bomb_pixels, check_pixel_count, too_large


def decode_dicom(data: bytes, label: str, *, force: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """The canonical gray array of a DICOM file (``force``: one without preamble, accepted by its name); an
    ``ImageReadError`` for any failure, :class:`UnrecognisedImage` for forced bytes without pixel data."""
    try:
        return _dicom_to_gray(data, label, force, max_pixels)
    except ImageReadError:
        raise
    except BOMB_ERRORS as exc:
        raise ImageReadError(label, too_large(bomb_pixels(exc))) from exc
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad data
        raise ImageReadError(label, f"unreadable DICOM ({type(exc).__name__}: {detail(exc)})") from exc


def _dicom_to_gray(data: bytes, label: str, force: bool, max_pixels: int | None = None) -> np.ndarray:
    ds = _read_dataset(data, label, force)
    _check_decodable(ds, label)
    check_pixel_count(label, int(ds.Columns), int(ds.Rows), max_pixels)

    from pydicom.pixels import apply_color_lut, pixel_array

    arr = pixel_array(ds, index=0)  # first frame only; YBR is converted to RGB
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == 3:
        return rgb_to_gray(arr)

    out = to_uint8(*_display_values(arr, ds))
    if photometric == "MONOCHROME1":
        # Inverting after a linear map onto 0..255 equals inverting before it.
        out = 255 - out
    return out


def _read_dataset(data: bytes, label: str, force: bool):
    """The parsed DICOM dataset, refused without pixel data."""
    # Imported lazily: only DICOM inputs pay for importing pydicom (an optional extra).
    try:
        import pydicom
    except ModuleNotFoundError:
        raise ImageReadError(
            label, "DICOM needs pydicom, which is not installed: pip install 'coronet[dicom]'"
        ) from None

    ds = pydicom.dcmread(BytesIO(data), force=force)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        # A forced parse "succeeds" on almost any bytes, so without pixel data
        # there is no evidence that a preamble-less file was DICOM at all.
        if force:
            raise UnrecognisedImage(label)
        raise ImageReadError(label, "DICOM has no pixel data")
    return ds


def _check_decodable(ds, label: str) -> None:
    """Give a file without meta header the transfer syntax its encoding implies; refuse one whose codec is
    not installed."""
    from pydicom import uid
    from pydicom.pixels import get_decoder

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


def _display_values(arr: np.ndarray, ds) -> tuple[np.ndarray, float | None, float | None]:
    """The modality LUT and the VOI LUT (else the window) applied, with the VOI output range ``lo, hi`` to scale
    onto 0..255; ``None, None`` (the data's own range) where neither VOI applies."""
    from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing

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
    return arr, lo, hi
