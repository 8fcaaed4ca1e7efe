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

One job per module: :mod:`.read` (:func:`read_image`, :func:`sniff_format`), :mod:`.pillow` and :mod:`.dicom`
(the decoders), :mod:`.canonical` (8-bit gray, the one resize), :mod:`.limits` (what is refused before decoding),
:mod:`.decoderwarnings` (a file's warnings, its own) and :mod:`.errors`.
"""

from .canonical import resize_square
from .errors import ImageReadError, UnrecognisedImage
from .limits import DEFAULT_MAX_PIXELS, MAX_FILE_BYTES
from .read import read_image, sniff_format

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_FILE_BYTES",
    "ImageReadError",
    "UnrecognisedImage",
    "read_image",
    "resize_square",
    "sniff_format",
]
