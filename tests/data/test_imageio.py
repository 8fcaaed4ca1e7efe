"""Tests for coronet.data.imageio: every input becomes a 2-D uint8 array or an ImageReadError."""

from __future__ import annotations

import io
import os
import pickle
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate

from coronet.data.imageio import ImageReadError, UnrecognisedImage, read_image, sniff_format

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- helpers


def _gradient(h: int = 24, w: int = 32) -> np.ndarray:
    """A deterministic 8-bit test pattern with every row different."""
    y, x = np.mgrid[0:h, 0:w]
    return ((x * 7 + y * 13) % 256).astype(np.uint8)


def _rgb(h: int = 24, w: int = 32) -> np.ndarray:
    g = _gradient(h, w)
    g16 = g.astype(np.uint16)
    return np.stack([g16, 255 - g16, (g16 * 3) % 256], axis=-1).astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_canonical(arr: np.ndarray) -> None:
    assert isinstance(arr, np.ndarray)
    assert arr.ndim == 2
    assert arr.dtype == np.uint8
    assert arr.flags.c_contiguous
    assert arr.flags.writeable


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _png_header_only(width: int, height: int) -> bytes:
    """A well-formed PNG whose IHDR claims width x height (8-bit gray) but
    whose IDAT holds a single row: Pillow reads the size without decoding."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _dicom(
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    **elements,
) -> Dataset:
    """A minimal Secondary Capture dataset, Explicit VR Little Endian."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = uid.SecondaryCaptureImageStorage
    ds.SOPInstanceUID = uid.generate_uid()
    ds.Modality = "CR"
    if pixels is not None:
        bits = bits_stored or pixels.dtype.itemsize * 8
        ds.set_pixel_data(pixels, photometric, bits)
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


def _dicom_bytes(ds: Dataset, **save_options) -> bytes:
    save_options.setdefault("enforce_file_format", True)
    buf = io.BytesIO()
    ds.save_as(buf, **save_options)
    return buf.getvalue()


def _ramp16(lo: int, hi: int, shape=(64, 64), dtype=np.uint16) -> np.ndarray:
    n = shape[0] * shape[1]
    return np.linspace(lo, hi, n).round().astype(dtype).reshape(shape)


# ---------------------------------------------------------------- Pillow formats


def test_png_8bit_gray_round_trip_is_exact(tmp_path):
    pixels = _gradient()
    path = _write(tmp_path, "gray.png", _encode(Image.fromarray(pixels), "PNG"))
    out = read_image(path)
    _assert_canonical(out)
    np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA", "1"])
def test_png_modes_match_pillow_convert_l(tmp_path, mode):
    rgba = Image.fromarray(np.dstack([_rgb(), _gradient()[..., None]]))  # alpha varies
    img = rgba if mode == "RGBA" else rgba.convert("RGB").convert(mode)
    data = _encode(img, "PNG")
    assert Image.open(io.BytesIO(data)).mode == mode

    out = read_image(_write(tmp_path, f"{mode}.png", data))
    _assert_canonical(out)
    # Alpha is ignored: the expected value is the luma of the colour channels.
    decoded = Image.open(io.BytesIO(data))
    if decoded.mode in ("RGBA", "P"):
        decoded = decoded.convert("RGBA").convert("RGB")
    np.testing.assert_array_equal(out, np.asarray(decoded.convert("L")))


def test_rgba_alpha_is_ignored_not_composited(tmp_path):
    rgb = _rgb()
    transparent = np.dstack([rgb, np.zeros(rgb.shape[:2], np.uint8)])
    out = read_image(_write(tmp_path, "clear.png", _encode(Image.fromarray(transparent), "PNG")))
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(out, expected)


def test_palette_with_transparency_does_not_warn(tmp_path):
    img = Image.fromarray(_rgb()).convert("P")
    data = _encode(img, "PNG", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = read_image(_write(tmp_path, "p_trns.png", data))
    np.testing.assert_array_equal(out, np.asarray(img.convert("RGB").convert("L")))


def test_cmyk_jpeg(tmp_path):
    img = Image.fromarray(_rgb()).convert("CMYK")
    data = _encode(img, "JPEG", quality=95)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == "CMYK"
    out = read_image(_write(tmp_path, "cmyk.jpg", data))
    _assert_canonical(out)
    np.testing.assert_array_equal(out, np.asarray(decoded.convert("RGB").convert("L")))


def test_16bit_png_is_stretched_to_full_range(tmp_path):
    pixels = _ramp16(0, 4095)
    data = _encode(Image.fromarray(pixels), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    out = read_image(_write(tmp_path, "deep.png", data))
    _assert_canonical(out)
    assert out.min() == 0 and out.max() == 255
    np.testing.assert_array_equal(out, np.rint(pixels / 4095 * 255).astype(np.uint8))


def test_constant_16bit_image_is_zeros(tmp_path):
    data = _encode(Image.fromarray(np.full((8, 8), 1234, np.uint16)), "PNG")
    out = read_image(data, name="flat.png")
    np.testing.assert_array_equal(out, np.zeros((8, 8), np.uint8))


def test_float_tiff_is_stretched(tmp_path):
    pixels = np.linspace(-1.0, 3.0, 64, dtype=np.float32).reshape(8, 8)
    out = read_image(_encode(Image.fromarray(pixels), "TIFF"), name="f.tif")
    assert out.min() == 0 and out.max() == 255


def test_exif_orientation_is_applied(tmp_path):
    pixels = _gradient(20, 40)  # H=20, W=40
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    data = _encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)
    out = read_image(_write(tmp_path, "rotated.jpg", data))
    assert out.shape == (40, 20)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("L"))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_pillow_formats(fmt):
    pixels = _gradient()
    params = {"lossless": True} if fmt == "WEBP" else {}
    out = read_image(_encode(Image.fromarray(pixels), fmt, **params), name=f"x.{fmt.lower()}")
    _assert_canonical(out)
    assert out.shape == pixels.shape
    if fmt != "WEBP":  # lossless WebP stores RGB; luma of gray may differ by rounding
        np.testing.assert_array_equal(out, pixels)


def test_extension_is_not_trusted(tmp_path):
    pixels = _gradient()
    path = _write(tmp_path, "actually_png.jpg", _encode(Image.fromarray(pixels), "PNG"))
    np.testing.assert_array_equal(read_image(path), pixels)


def test_bytes_input_equals_path_input(tmp_path):
    data = _encode(Image.fromarray(_rgb()), "JPEG")
    path = _write(tmp_path, "x.jpg", data)
    from_path = read_image(path)
    np.testing.assert_array_equal(read_image(data, name="upload.jpg"), from_path)
    np.testing.assert_array_equal(read_image(bytearray(data)), from_path)
    np.testing.assert_array_equal(read_image(str(path)), from_path)


def test_bytes_error_names_the_upload():
    with pytest.raises(ImageReadError) as info:
        read_image(b"hello world", name="upload.png")
    assert info.value.path == "upload.png"
    assert str(info.value) == "upload.png: not an image (unrecognised format)"


def test_bytes_error_without_name():
    with pytest.raises(ImageReadError, match=r"^<bytes>: "):
        read_image(b"")


# ---------------------------------------------------------------- bad input


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    jpeg = _encode(Image.fromarray(_rgb(64, 64)), "JPEG")
    png = _encode(Image.fromarray(_rgb(64, 64)), "PNG")
    rng = np.random.default_rng(0)
    (tmp_path / "a_directory").mkdir()
    return {
        "empty": (_write(tmp_path, "empty.png", b""), "empty file"),
        "truncated_jpeg": (_write(tmp_path, "half.jpg", jpeg[: len(jpeg) // 2]), "truncated JPEG"),
        "truncated_png": (_write(tmp_path, "half.png", png[: len(png) // 2]), "truncated PNG"),
        "png_header_only": (_write(tmp_path, "stub.png", png[:20]), "PNG"),
        "text": (_write(tmp_path, "notes.png", b"patient notes\nnot an image\n"), "not an image"),
        "random": (_write(tmp_path, "noise.jpg", rng.bytes(4096)), "not an image"),
        "bomb_error": (_write(tmp_path, "bomb.png", _png_header_only(20000, 20000)), "decompression bomb"),
        # Between MAX_IMAGE_PIXELS and twice that, Pillow only warns.
        "bomb_warning": (_write(tmp_path, "bomb2.png", _png_header_only(10000, 10000)), "decompression bomb"),
        "missing": (tmp_path / "no_such_file.png", "file not found"),
        "directory": (tmp_path / "a_directory", "directory"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "empty",
        "truncated_jpeg",
        "truncated_png",
        "png_header_only",
        "text",
        "random",
        "bomb_error",
        "bomb_warning",
        "missing",
        "directory",
    ],
)
def test_bad_input_raises_one_clear_error(tmp_path, case):
    path, expected = _bad_inputs(tmp_path)[case]
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    err = info.value
    assert isinstance(err, ValueError)
    message = str(err)
    assert message.startswith(f"{path}: ")
    assert "\n" not in message
    assert expected in message
    assert err.path == str(path)
    assert message == f"{err.path}: {err.problem}"


def _with_bad_crc(png: bytes, kind: bytes) -> bytes:
    """``png`` with the CRC of its first ``kind`` chunk flipped."""
    data = bytearray(png)
    at = data.index(kind)
    data[at + 4 + struct.unpack(">I", data[at - 4 : at])[0]] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("kind", [b"IHDR", b"IDAT", b"IEND"])
def test_a_png_whose_crc_fails_is_refused(kind):
    """Pillow checks the CRCs of the chunks before the image data only; a damaged IDAT or IEND decoded silently."""
    png = _encode(Image.fromarray(_rgb(24, 32)), "PNG")
    assert read_image(png, name="good.png").shape == (24, 32)
    with pytest.raises(ImageReadError) as info:
        read_image(_with_bad_crc(png, kind), name="damaged.png")
    assert not isinstance(info.value, UnrecognisedImage)  # an image, damaged: not "not an image"
    problem = info.value.problem
    at = png.index(kind) - 4
    assert problem == f"corrupt PNG (CRC mismatch in the {kind.decode()} chunk at byte {at}: damaged file)"


def test_bytes_that_are_no_image_raise_unrecognised_image_whatever_the_name():
    noise = np.random.default_rng(5).bytes(3000)
    for name in ("noise.dcm", "noise.png", "noise", "noise.dicom"):
        with pytest.raises(UnrecognisedImage, match="not an image"):
            read_image(noise, name=name)
    with pytest.raises(ImageReadError) as info:  # a DICOM, damaged: not "unrecognised"
        read_image(_dicom_bytes(_dicom(None)), name="meta_only.dcm")
    assert not isinstance(info.value, UnrecognisedImage)
    error = UnrecognisedImage("x.dcm")
    assert pickle.loads(pickle.dumps(error)).problem == error.problem


def test_bomb_message_reports_size_and_limit(tmp_path):
    with pytest.raises(ImageReadError) as info:
        read_image(_png_header_only(20000, 20000), name="bomb.png")
    problem = info.value.problem
    assert "too large" in problem
    assert "400000000 pixels" in problem
    assert str(Image.MAX_IMAGE_PIXELS) in problem


def test_max_pixels_lowers_the_limit_for_one_call():
    png16 = _encode(Image.fromarray(_ramp16(0, 65535, shape=(60, 50))), "PNG")
    assert read_image(png16, name="ok.png", max_pixels=3000).shape == (60, 50)
    with pytest.raises(ImageReadError) as info:
        read_image(png16, name="big.png", max_pixels=2999)
    assert info.value.problem.startswith("image too large (3000 pixels, limit 2999)")
    dicom = _dicom_bytes(_dicom(_ramp16(0, 4095, shape=(60, 50))))
    with pytest.raises(ImageReadError, match="limit 2999"):
        read_image(dicom, name="big.dcm", max_pixels=2999)
    # a higher per-call value never raises the project-wide limit
    with pytest.raises(ImageReadError, match=str(Image.MAX_IMAGE_PIXELS)):
        read_image(_png_header_only(20000, 20000), name="bomb.png", max_pixels=10**12)


def test_bomb_protection_is_left_in_place():
    limit = Image.MAX_IMAGE_PIXELS
    filters = list(warnings.filters)
    with pytest.raises(ImageReadError):
        read_image(_png_header_only(10000, 10000), name="bomb.png")
    assert Image.MAX_IMAGE_PIXELS == limit
    assert warnings.filters == filters


def test_decoder_warnings_join_the_verdict_and_never_escape():
    """A DICOM that says RLE but holds raw pixels, a JPEG with corrupt EXIF, a TIFF with a bad IFD: their decoders'
    warnings end the one-line error (the DICOM) or come back in ``warned`` (the others, which are read), every
    time; none is shown as a Python warning; the warning filters are as they were."""
    from deploy_helpers import warning_files

    files = warning_files()
    filters, show = list(warnings.filters), warnings.showwarning
    with warnings.catch_warnings(record=True) as escaped:
        warnings.simplefilter("always")
        for _ in range(2):  # the second time too: not once per place in the library
            with pytest.raises(ImageReadError) as info:
                read_image(files["rle-raw.dcm"], name="rle-raw.dcm")
            assert "unreadable DICOM" in info.value.problem
            assert "decoder warning: " in info.value.problem and "transfer syntax" in info.value.problem
            assert "\n" not in str(info.value)
            for name, expected in (
                ("bad-exif.jpg", ["Tag data larger than file", "Corrupt EXIF data"]),
                ("bad-ifd.tif", ["Corrupt EXIF data"]),
            ):
                warned: list[str] = []
                assert read_image(files[name], name=name, warned=warned).shape == (32, 40)
                assert len(warned) == len(expected), warned  # each once, although Pillow repeats some
                assert all(w.startswith(e) for w, e in zip(warned, expected)), warned
            assert read_image(_encode(Image.fromarray(_gradient()), "PNG"), warned=(clean := [])).shape == (24, 32)
            assert clean == []
    assert escaped == []
    assert warnings.filters == filters and warnings.showwarning is show


def test_decoder_warnings_stay_with_their_thread():
    """Threads decoding at once each get their own file's warnings only; a warning raised meanwhile by a thread
    that is not decoding is shown as usual; afterwards the warnings state is as it was."""
    import threading

    from deploy_helpers import jpeg_with_corrupt_exif

    bad, good = jpeg_with_corrupt_exif(), _encode(Image.fromarray(_gradient()), "PNG")
    filters, show = list(warnings.filters), warnings.showwarning
    results: dict[tuple[int, int], list[str]] = {}
    start = threading.Barrier(6)

    def decode(k: int) -> None:
        start.wait(30)
        for i in range(20):
            warned: list[str] = []
            read_image(bad if (k + i) % 2 else good, warned=warned)
            results[k, i] = warned

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=decode, args=(k,)) for k in range(6)]
        for thread in threads:
            thread.start()
        for _ in range(20):
            warnings.warn("not about a file", UserWarning, stacklevel=1)  # from this thread, while others decode
        for thread in threads:
            thread.join(60)
    assert len(results) == 120
    for (k, i), warned in results.items():
        assert len(warned) == (2 if (k + i) % 2 else 0), (k, i, warned)
    assert [str(w.message) for w in shown] == ["not about a file"] * 20
    assert warnings.filters == filters and warnings.showwarning is show


def test_error_pickles():
    err = ImageReadError("a.png", "truncated PNG")
    clone = pickle.loads(pickle.dumps(err))
    assert isinstance(clone, ImageReadError)
    assert (clone.path, clone.problem, str(clone)) == (err.path, err.problem, str(err))


def test_error_message_stays_on_one_line():
    err = ImageReadError("odd\nname.png", "line one\nline two")
    assert str(err) == "odd name.png: line one line two"


# ---------------------------------------------------------------- sniffing


def test_sniff_format_each_kind():
    img = Image.fromarray(_gradient())
    assert sniff_format(_encode(img, "PNG")) == "png"
    assert sniff_format(_encode(img, "JPEG")) == "jpeg"
    assert sniff_format(_encode(img, "GIF")) == "gif"
    assert sniff_format(_encode(img, "BMP")) == "bmp"
    assert sniff_format(_encode(img, "TIFF")) == "tiff"
    assert sniff_format(_encode(img.convert("RGB"), "WEBP")) == "webp"
    assert sniff_format(_dicom_bytes(_dicom(_gradient()))) == "dicom"
    assert sniff_format(b"MM\x00*\x00\x00\x00\x08") == "tiff"
    assert sniff_format(b"") is None
    assert sniff_format(b"hello world, this is text") is None
    assert sniff_format(b"BM") is None  # too short to be a bitmap


# ---------------------------------------------------------------- DICOM


def test_dicom_16bit_spans_full_range():
    pixels = _ramp16(0, 65535)
    out = read_image(_dicom_bytes(_dicom(pixels)), name="a.dcm")
    _assert_canonical(out)
    np.testing.assert_array_equal(out, np.rint(pixels / 65535 * 255).astype(np.uint8))


def test_dicom_12bit_uses_whole_8bit_range(tmp_path):
    pixels = _ramp16(0, 4095)
    path = _write(tmp_path, "twelve.dcm", _dicom_bytes(_dicom(pixels, bits_stored=12)))
    out = read_image(path)
    _assert_canonical(out)
    assert out.min() == 0 and out.max() == 255
    assert len(np.unique(out)) == 256


def test_dicom_signed_pixels():
    pixels = _ramp16(-1000, 3000, dtype=np.int16)
    out = read_image(_dicom_bytes(_dicom(pixels)), name="signed.dcm")
    assert out[0, 0] == 0 and out[-1, -1] == 255


def test_dicom_monochrome1_is_inverted():
    pixels = _ramp16(0, 4095)
    mono2 = read_image(_dicom_bytes(_dicom(pixels, bits_stored=12)), name="m2.dcm")
    mono1 = read_image(_dicom_bytes(_dicom(pixels, photometric="MONOCHROME1", bits_stored=12)), name="m1.dcm")
    np.testing.assert_array_equal(mono1, 255 - mono2)
    assert mono1[0, 0] == 255  # lowest stored value is white in MONOCHROME1


def test_dicom_rescale_is_applied_before_the_window():
    # Stored values 0, 1024, 1064, 2048 are -1024, 0, 40, 1024 HU after the
    # intercept; the window [40 - 200, 40 + 200] only makes sense in HU.
    pixels = np.array([[0, 1024], [1064, 2048]], dtype=np.uint16)
    ds = _dicom(pixels, bits_stored=12, RescaleSlope=1, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    out = read_image(_dicom_bytes(ds), name="ct.dcm")
    assert out[0, 0] == 0  # -1024 HU: below the window
    assert out[1, 1] == 255  # 1024 HU: above the window
    assert abs(int(out[0, 1]) - 102) <= 1  # 0 HU: 160/400 of the way up
    assert abs(int(out[1, 0]) - 128) <= 1  # 40 HU: the window centre


def test_dicom_negative_rescale_slope_is_applied():
    pixels = _ramp16(0, 4095)
    plain = read_image(_dicom_bytes(_dicom(pixels, bits_stored=12)), name="a.dcm")
    flipped = read_image(
        _dicom_bytes(_dicom(pixels, bits_stored=12, RescaleSlope=-1, RescaleIntercept=0)),
        name="b.dcm",
    )
    np.testing.assert_array_equal(flipped, 255 - plain)


def test_dicom_window_clips_outside_values():
    pixels = _ramp16(0, 4095)
    ds = _dicom(pixels, bits_stored=12, WindowCenter=2048, WindowWidth=1024)
    out = read_image(_dicom_bytes(ds), name="w.dcm")
    assert np.all(out[pixels <= 1536] == 0)
    assert np.all(out[pixels >= 2560] == 255)
    inside = (pixels > 1600) & (pixels < 2500)
    assert np.all((out[inside] > 0) & (out[inside] < 255))
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone in the input


def test_dicom_voi_lut_sequence_is_applied():
    pixels = _ramp16(0, 4095)
    table = np.round(np.sqrt(np.arange(4096)) * 1000 / 64).astype(np.uint16)
    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor
    item.add_new(0x00283006, "US", table.tolist())  # LUT Data
    # A window is present too: the LUT takes precedence, as in pydicom.
    ds = _dicom(pixels, bits_stored=12, VOILUTSequence=[item], WindowCenter=100, WindowWidth=10)
    out = read_image(_dicom_bytes(ds), name="lut.dcm")
    expected = np.rint(table[pixels] / table.max() * 255).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_dicom_multiframe_takes_first_frame():
    first = _ramp16(0, 4095, shape=(16, 16))
    second = np.full((16, 16), 7, np.uint16)
    out = read_image(_dicom_bytes(_dicom(np.stack([first, second]), bits_stored=12)), name="mf.dcm")
    np.testing.assert_array_equal(out, np.rint(first / 4095 * 255).astype(np.uint8))


def test_dicom_rgb_matches_pillow_luma():
    rgb = _rgb()
    out = read_image(_dicom_bytes(_dicom(rgb, photometric="RGB")), name="rgb.dcm")
    _assert_canonical(out)
    np.testing.assert_array_equal(out, np.asarray(Image.fromarray(rgb).convert("L")))


def test_dicom_without_preamble_needs_dicom_extension(tmp_path):
    ds = _dicom(_ramp16(0, 4095), bits_stored=12)
    del ds.file_meta
    data = _dicom_bytes(ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert data[128:132] != b"DICM" and sniff_format(data) is None
    out = read_image(_write(tmp_path, "raw.dcm", data))
    assert out.min() == 0 and out.max() == 255
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(data, name="raw.bin")
    # A forced parse accepts almost anything; text named .dcm is still rejected.
    with pytest.raises(ImageReadError, match="not an image"):
        read_image(b"just some text " * 20, name="notes.dcm")


def test_dicom_without_pixel_data():
    with pytest.raises(ImageReadError) as info:
        read_image(_dicom_bytes(_dicom(None)), name="meta_only.dcm")
    assert str(info.value) == "meta_only.dcm: DICOM has no pixel data"


def _compressed(transfer_syntax: str) -> bytes:
    ds = _dicom(
        None,
        Rows=16,
        Columns=16,
        SamplesPerPixel=1,
        BitsAllocated=16,
        BitsStored=12,
        HighBit=11,
        PixelRepresentation=0,
        PhotometricInterpretation="MONOCHROME2",
    )
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.PixelData = encapsulate([b"\x00\x01garbage, not a codestream" * 4])
    ds["PixelData"].VR = "OB"
    return _dicom_bytes(ds)


def test_dicom_jpeg2000_garbage_is_a_read_error():
    with pytest.raises(ImageReadError) as info:
        read_image(_compressed(uid.JPEG2000Lossless), name="j2k.dcm")
    assert str(info.value).startswith("j2k.dcm: ")
    assert "\n" not in str(info.value)


def test_dicom_codec_not_installed_is_named():
    with pytest.raises(ImageReadError) as info:
        read_image(_compressed(uid.JPEGLSLossless), name="jls.dcm")
    assert info.value.problem == f"DICOM compression not supported: {uid.JPEGLSLossless.name}"


def test_dicom_truncated_is_a_read_error():
    data = _dicom_bytes(_dicom(_ramp16(0, 4095)))
    with pytest.raises(ImageReadError, match="^cut.dcm: "):
        read_image(data[: len(data) - 1000], name="cut.dcm")


def test_dicom_too_large_is_refused_before_decoding():
    ds = _dicom(np.zeros((4, 4), np.uint16), Rows=20000, Columns=20000)
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_image(_dicom_bytes(ds), name="huge.dcm")


# ---------------------------------------------------------------- real data


def _data_dir() -> Path:
    return Path(os.environ.get("CORONET_DATA", REPO_ROOT / ".." / "shared" / "data"))


@pytest.mark.parametrize("subdir", ["cohen-covid/images", "kaggle-pneumonia/chest_xray/train/NORMAL"])
def test_real_images_match_pillow(subdir):
    folder = _data_dir() / subdir
    if not folder.is_dir():
        pytest.skip(f"real data not available at {folder}")
    paths = sorted(p for p in folder.iterdir() if p.is_file())[:3]
    assert paths, f"no files in {folder}"
    for path in paths:
        out = read_image(path)
        _assert_canonical(out)
        with Image.open(path) as img:
            # exif_transpose is a no-op for files without an orientation tag.
            expected = np.asarray(ImageOps.exif_transpose(img).convert("L"))
        np.testing.assert_array_equal(out, expected, err_msg=str(path))
