"""Helpers for the tests of predict, explain, export and serve.

A tiny model directory (no training needed), a few real X-rays from the shared data, a corpus
of bad files made here, and a real uvicorn server on loopback.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

CLASSES = ("covid", "normal", "bacterial", "viral")


def make_model_dir(
    out: Path,
    *,
    backbone: str = "test_resnet",
    input_size: int = 64,
    hidden: int = 16,
    seed: int = 0,
    sharpen: float = 10.0,
    tta: str | None = None,
) -> Path:
    """A random-weight CoroNet saved as a model directory.

    ``sharpen`` multiplies the two dense layers' weights: a random network's probabilities are
    otherwise near-identical for every film (differences ~1e-4), and tests comparing runtimes or
    requests need predictions that differ from image to image.
    """
    from coronet.models.coronet import build_model
    from coronet.models.modeldir import save_model_dir

    torch.manual_seed(seed)
    model = build_model(len(CLASSES), backbone, input_size=input_size, hidden=hidden)
    with torch.no_grad():
        model.head[2].weight.mul_(sharpen)
        model.head[4].weight.mul_(sharpen)
    return save_model_dir(
        model,
        out,
        classes=CLASSES,
        backbone=backbone,
        input_size=input_size,
        hidden=hidden,
        dropout=0.5,
        extra={"inference": {"tta": tta}} if tta else None,
    )


def real_xrays(data_dir: Path, per_folder: int = 2) -> list[Path]:
    """A few real films: COVID-19 (Cohen), normal and pneumonia (Kaggle), ``per_folder`` of each, sorted."""
    folders = [
        data_dir / "cohen-covid" / "images",
        data_dir / "kaggle-pneumonia" / "chest_xray" / "train" / "NORMAL",
        data_dir / "kaggle-pneumonia" / "chest_xray" / "train" / "PNEUMONIA",
    ]
    return [path for folder in folders for path in sorted(folder.glob("*.jp*g"))[:per_folder]]


def jpeg_bytes(seed: int = 0, size=(96, 80)) -> bytes:
    """A small random grey JPEG."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG whose header claims width x height but whose data is one row (a pixel bomb)."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + chunk(b"IEND", b"")
    )


def dicom_without_pixels() -> bytes:
    """A valid DICOM file (preamble, DICM, file meta) with no Pixel Data element."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid.generate_uid()
    ds.Modality = "CR"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def png_with_bad_crc() -> bytes:
    """A small grey PNG whose image data chunk (IDAT) has a wrong CRC: its pixels still decode, as Pillow does not
    check that CRC, but the file is damaged."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 40), dtype=np.uint8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    at = data.index(b"IDAT")
    crc = at + 4 + struct.unpack(">I", data[at - 4 : at])[0]
    data[crc] ^= 0xFF
    return bytes(data)


def bad_files() -> dict[str, tuple[str, bytes]]:
    """Name -> (file name, content) of files no reader should accept."""
    return {
        "zero bytes": ("empty.png", b""),
        "truncated JPEG": ("cut.jpg", jpeg_bytes()[:400]),
        "text renamed .png": ("notes.png", b"patient list, not an image\n" * 20),
        "random bytes named .dcm": ("noise.dcm", np.random.default_rng(7).bytes(3000)),
        "PNG with a bad CRC": ("damaged.png", png_with_bad_crc()),
        "20000x20000 PNG header": ("bomb.png", png_header_only(20000, 20000)),
        "DICOM without pixels": ("meta.dcm", dicom_without_pixels()),
    }


class LiveServer:
    """A real uvicorn server for ``app`` on 127.0.0.1 (a free port), in a thread: ``with LiveServer(app) as url``."""

    def __init__(self, app, **config):
        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(600):  # up to a minute on a loaded machine
            if self.server.started or not self.thread.is_alive():
                break
            self.thread.join(0.1)
        if not self.server.started:
            raise RuntimeError("uvicorn did not start")
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.socket.close()


# ------------------------------------------------------------------ files whose decoders warn


def dicom_rle_with_raw_pixels() -> bytes:
    """A DICOM whose transfer syntax says RLE Lossless but whose pixel data is raw: pydicom warns ("check that the
    transfer syntax has been set correctly"), then fails."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = uid.ComputedRadiographyImageStorage, uid.generate_uid(), "CR"
    ds.set_pixel_data(np.random.default_rng(0).integers(0, 4096, (32, 40), dtype=np.uint16), "MONOCHROME2", 12)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    explicit, rle = (str(u).encode() + b"\0" for u in (uid.ExplicitVRLittleEndian, uid.RLELossless))
    assert len(explicit) == len(rle) and buffer.getvalue().count(explicit) == 1
    return buffer.getvalue().replace(explicit, rle)  # the same length: the file meta stays valid


def _ifd(entries: list[tuple[int, int, int, bytes]], claimed: int | None = None) -> bytes:
    """A little-endian TIFF IFD of ``(tag, type, count, 4-byte value)`` entries; ``claimed`` overstates the count."""
    out = struct.pack("<H", len(entries) if claimed is None else claimed)
    for tag, kind, count, value in entries:
        out += struct.pack("<HHI", tag, kind, count) + value
    return out + struct.pack("<I", 0)


def jpeg_with_corrupt_exif() -> bytes:
    """A good JPEG whose EXIF block says its Make tag holds 1000 bytes at offset 5000 and claims one IFD entry
    more than it has: Pillow warns "Tag data larger than file" and "Corrupt EXIF data", and decodes the film."""
    ifd = _ifd([(0x010F, 2, 1000, struct.pack("<I", 5000))], claimed=2)
    exif = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd
    jpeg = jpeg_bytes(size=(40, 32))
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + jpeg[2:]


def tiff_with_bad_ifd() -> bytes:
    """An 8-bit grey 40 x 32 TIFF whose IFD claims 1000 entries more than it holds: Pillow warns "Corrupt EXIF data"
    and decodes the film from the entries that are there."""
    width, height = 40, 32
    pixels = np.random.default_rng(1).integers(0, 256, (height, width), dtype=np.uint8).tobytes()
    short, long = (lambda v: struct.pack("<HH", v, 0)), (lambda v: struct.pack("<I", v))
    entries = [
        (256, 3, 1, short(width)),
        (257, 3, 1, short(height)),
        (258, 3, 1, short(8)),
        (259, 3, 1, short(1)),  # no compression
        (262, 3, 1, short(1)),  # black is zero
        (273, 4, 1, long(0)),  # strip offset: set below
        (277, 3, 1, short(1)),
        (278, 3, 1, short(height)),
        (279, 4, 1, long(len(pixels))),
    ]
    start = 8 + 2 + 12 * len(entries) + 4
    entries[5] = (273, 4, 1, long(start))
    return b"II*\0" + struct.pack("<I", 8) + _ifd(entries, claimed=len(entries) + 1000) + pixels


def warning_files() -> dict[str, bytes]:
    """File name -> content of three films whose decoders warn (the first cannot be read, the others can)."""
    return {
        "rle-raw.dcm": dicom_rle_with_raw_pixels(),
        "bad-exif.jpg": jpeg_with_corrupt_exif(),
        "bad-ifd.tif": tiff_with_bad_ifd(),
    }
