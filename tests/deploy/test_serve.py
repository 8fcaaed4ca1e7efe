"""The web service: API on real films, the bad-input corpus, limits, concurrency on a real server."""

from __future__ import annotations

import base64
import io
import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from coronet.data.imageio import read_image
from coronet.deploy.predict import Predictor
from coronet.deploy.serve import (
    GuardedH11Protocol,
    create_app,
    default_max_concurrency,
    default_model_threads,
    server_options,
)
from deploy_helpers import LiveServer, bad_files, jpeg_bytes

LIMIT = 1024 * 1024  # the tests' upload cap: the shared films are well under it


@pytest.fixture(scope="module")
def predictor(tiny_model_dir) -> Predictor:
    return Predictor(tiny_model_dir)


@pytest.fixture(scope="module")
def client(predictor):
    with TestClient(create_app(predictor=predictor, max_upload_bytes=LIMIT), raise_server_exceptions=False) as c:
        yield c


def upload(client, name: str, content: bytes, *, params=None, data=None, content_type="application/octet-stream"):
    return client.post("/v1/predict", files={"file": (name, content, content_type)}, params=params, data=data)


def assert_healthy(client, predictor, xray) -> None:
    """Health answers, and a good film is still predicted correctly."""
    assert client.get("/v1/health").json()["status"] == "ok"
    response = upload(client, xray.name, xray.read_bytes())
    assert response.status_code == 200
    expected = predictor.probabilities([read_image(xray)])[0]
    np.testing.assert_allclose(list(response.json()["probabilities"].values()), expected, atol=1e-6)


def test_predict_real_films(client, predictor, xray_paths):
    for path in xray_paths:
        response = upload(client, path.name, path.read_bytes(), content_type="image/jpeg")
        assert response.status_code == 200, response.text
        body = response.json()
        expected = predictor.probabilities([read_image(path)])[0]
        assert list(body["probabilities"]) == ["covid", "normal", "bacterial", "viral"]
        np.testing.assert_allclose(list(body["probabilities"].values()), expected, atol=1e-6)
        assert body["predicted_class"] == predictor.classes[int(np.argmax(expected))]
        assert body["model"]["name"] == "coronet-test_resnet" and body["model"]["version"] == predictor.card["version"]
        assert body["file"] == path.name and "not a medical device" in body["notice"].lower()
        assert "cam" not in body and "image" not in body


def test_predict_dicom(client, predictor, xray_paths):
    """A film as 12-bit MONOCHROME1 DICOM is read as the CLI reads it (LUT, inversion), with or without preamble."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset

    film = read_image(xray_paths[4])
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = uid.ComputedRadiographyImageStorage, uid.generate_uid(), "CR"
    ds.set_pixel_data((4095 - film.astype(np.uint16) * 16), "MONOCHROME1", 12)
    for preamble, name in ((True, "film.bin"), (False, "film.dcm")):
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=preamble)
        body = upload(client, name, buffer.getvalue(), params={"image": "true"}).json()
        decoded = read_image(buffer.getvalue(), name=name)
        assert np.abs(decoded.astype(int) - film).max() <= 1  # the same film, bone bright again
        np.testing.assert_allclose(
            list(body["probabilities"].values()), predictor.probabilities([decoded])[0], atol=1e-6
        )
        assert body["image_size"] == {"width": film.shape[1], "height": film.shape[0]}
    # Without preamble only the name says DICOM: the same bytes under another name are refused.
    assert upload(client, "film.bin", buffer.getvalue()).status_code == 415


def _png(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_cam_and_image_on_request(client, predictor, xray_paths):
    path = xray_paths[2]
    film = read_image(path)
    for params, data in (({"cam": "true", "image": "1"}, None), (None, {"cam": "true", "image": "yes"})):
        body = upload(client, path.name, path.read_bytes(), params=params, data=data).json()
        cam, image = _png(body["cam"]), _png(body["image"])
        assert cam.mode == "RGB" and image.mode == "L"
        assert cam.size == image.size and max(cam.size) == min(512, max(film.shape))
        assert body["cam_class"] == body["predicted_class"]
        expected = predictor.heatmaps([film], [predictor.classes.index(body["cam_class"])])[0]
        assert np.ptp(expected) > 0.5  # a real map, not a blank one
    assert "cam" not in upload(client, path.name, path.read_bytes(), data={"cam": "false"}).json()


def test_health_model_card_docs_and_page(client, predictor):
    health = client.get("/v1/health").json()
    assert health == {
        "status": "ok",
        "model": "coronet-test_resnet",
        "version": predictor.card["version"],
        "runtime": "torch",
        "runtime_choice": {"requested": "torch", "record": None, "reason": "as requested"},
        "classes": list(predictor.classes),
        "max_upload_bytes": LIMIT,
        "uploads_in_progress": 0,
        "max_uploads": 64,
        "predictions_in_progress": 0,
        "max_concurrency": default_max_concurrency(default_model_threads()),
        "training_data": predictor.info["training_data"],
        "adult_false_covid_rate": None,
        "adult_test_films": None,
        "worst_false_covid_rate": None,
        "worst_false_covid_source": None,
        "source_warning": predictor.info["source_warning"],
    }
    assert "never measured" in health["source_warning"]  # a model without per-source figures is flagged
    assert client.get("/v1/model").json() == predictor.card
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower()  # Swagger UI from this server: works offline
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    schema = client.get("/openapi.json").json()["paths"]["/v1/predict"]["post"]
    assert "file" in schema["requestBody"]["content"]["multipart/form-data"]["schema"]["required"]
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "Research tool, not a medical device" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200


@pytest.mark.parametrize("kind", list(bad_files()))
def test_bad_files_are_refused_cleanly(client, predictor, xray_paths, kind):
    name, content = bad_files()[kind]
    response = upload(client, name, content, content_type="image/png")  # the declared type is not trusted
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    status, expected = {
        "zero bytes": (400, "0 bytes"),
        "truncated JPEG": (422, "truncated"),
        "text renamed .png": (415, "not a PNG, JPEG or DICOM"),
        "random bytes named .dcm": (415, "not a PNG, JPEG or DICOM"),  # as any other bytes that are no image
        "PNG with a bad CRC": (422, "corrupt PNG (CRC mismatch in the IDAT chunk"),
        "20000x20000 PNG header": (422, "decompression bomb"),
        "DICOM without pixels": (422, "no pixel data"),
    }[kind]
    assert response.status_code == status and error.startswith(name + ": ") and expected in error
    assert_healthy(client, predictor, xray_paths[0])


def test_bytes_that_are_no_image_get_415_whatever_their_name(client):
    noise = np.random.default_rng(11).bytes(5000)
    for name in ("noise.dcm", "noise.dicom", "noise.png", "noise.jpg", "noise"):
        response = upload(client, name, noise)
        assert response.status_code == 415, (name, response.text)
        assert response.json()["error"] == (
            f"{name}: not a PNG, JPEG or DICOM image (unrecognised content; the format is read from the bytes)"
        )


def test_multipart_parser_messages_go_through_the_service_log(client, caplog):
    """python-multipart logs a warning beside the 400 for a malformed body: it reaches the log as one line of the
    service's logger, not as a bare line of its own."""
    with caplog.at_level(logging.INFO):
        response = client.post(
            "/v1/predict",
            content=b"--x\r\nnot a header line\r\n\r\nabc\r\n--x--\r\n",
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
    assert response.status_code == 400
    parser = [r for r in caplog.records if "multipart parser" in r.getMessage()]
    assert parser and all(r.name == "coronet.serve" for r in parser), caplog.records
    assert all(r.getMessage().startswith("coronet serve: multipart parser: ") for r in parser)
    assert all("\n" not in r.getMessage() and r.exc_info is None for r in parser)
    assert not logging.getLogger("python_multipart").propagate  # nor on their own, past the service's prefix


def test_requests_that_are_not_a_good_upload(client, predictor, xray_paths):
    film = xray_paths[0].read_bytes()
    cases = [
        (client.post("/v1/predict", content=film, headers={"content-type": "image/jpeg"}), 415, "multipart/form-data"),
        (client.post("/v1/predict", files={"image": ("a.jpg", film)}), 422, "field 'file'"),
        (client.post("/v1/predict", data={"file": "not a file"}, files={"other": ("x", b"x")}), 422, "field 'file'"),
        (
            client.post("/v1/predict", files=[("file", ("a.jpg", film)), ("file", ("b.jpg", film))]),
            400,
            "Too many files",
        ),
        (
            client.post(
                "/v1/predict",
                content=b"--x\r\nnot a header line\r\n\r\nabc\r\n--x--\r\n",
                headers={"content-type": "multipart/form-data; boundary=x"},
            ),
            400,
            "malformed multipart",
        ),
        (
            client.post(
                "/v1/predict",
                content=b"--x\r\nContent-Disposition: form-data\r\n\r\nabc\r\n--x--\r\n",
                headers={"content-type": "multipart/form-data; boundary=x"},
            ),
            400,
            "name",
        ),
        (client.post("/v1/predict", content=b"x", headers={"content-type": "multipart/form-data"}), 400, "boundary"),
        (upload(client, "a.gif", _gif()), 415, "GIF image"),
        (upload(client, "a.jpg", film, params={"cam": "maybe"}), 422, "cam"),
        (client.get("/v1/predict"), 405, ""),
        (client.get("/v1/nothing"), 404, ""),
    ]
    for response, status, words in cases:
        assert response.status_code == status, response.text
        assert words in response.json()["error"]
    assert_healthy(client, predictor, xray_paths[0])


def test_long_file_names(client):
    """A file name is only a label (cut to 120 characters in the answer); one too long for the multipart parser's
    header line gets a 400 that names the limit, not just 'malformed'."""
    from coronet.deploy.serve import MAX_PART_HEADER_BYTES

    film = jpeg_bytes()
    response = upload(client, "a" * 1996 + ".jpg", film)
    assert response.status_code == 200 and response.json()["file"] == "a" * 120
    response = upload(client, "b" * 4996 + ".jpg", film)
    assert response.status_code == 400
    error = response.json()["error"]
    assert f"over the limit of {MAX_PART_HEADER_BYTES} bytes" in error and "file name" in error
    assert MAX_PART_HEADER_BYTES and 4000 < MAX_PART_HEADER_BYTES < 5000


def test_decoder_warnings_are_part_of_the_answer(client):
    """A DICOM whose decoder warns before failing gets a 422 that names the warning; a JPEG with corrupt EXIF is
    read and predicted."""
    from deploy_helpers import warning_files

    files = warning_files()
    response = upload(client, "rle-raw.dcm", files["rle-raw.dcm"])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith("rle-raw.dcm: unreadable DICOM") and "decoder warning: " in error
    assert "transfer syntax" in error
    assert upload(client, "bad-exif.jpg", files["bad-exif.jpg"]).status_code == 200


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="GIF")
    return buffer.getvalue()


def test_huge_multipart_body_is_refused_with_413(client, predictor, xray_paths):
    huge = jpeg_bytes() + b"\0" * (3 * LIMIT)
    response = upload(client, "huge.jpg", huge)
    assert response.status_code == 413 and "too large" in response.json()["error"]

    def chunked():  # no Content-Length: the cap must hold while the body streams in
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="huge.jpg"\r\n\r\n'
        for _ in range(3 * LIMIT // 65536):
            yield b"\0" * 65536
        yield b"\r\n--b--\r\n"

    response = client.post(
        "/v1/predict", content=chunked(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413 and "too large" in response.json()["error"]
    assert_healthy(client, predictor, xray_paths[0])


def test_too_many_pixels_are_refused_before_decoding(client, predictor, xray_paths):
    """A 7000 x 7000 16-bit PNG of zeros: a small file (under the upload cap) that would take GBs to decode."""
    buffer = io.BytesIO()
    Image.new("I;16", (7000, 7000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < LIMIT
    response = upload(client, "big16.png", buffer.getvalue())
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error.startswith("big16.png: image too large") and "49000000 pixels" in error and "limit 40000000" in error
    assert_healthy(client, predictor, xray_paths[0])


def test_max_pixels_setting(predictor, xray_paths):
    film = xray_paths[0]
    pixels = read_image(film).size
    with TestClient(create_app(predictor=predictor, max_pixels=pixels - 1, warm_up=False)) as small:
        response = upload(small, film.name, film.read_bytes())
        assert response.status_code == 422 and f"{pixels} pixels, limit {pixels - 1}" in response.json()["error"]
        assert upload(small, "small.jpg", jpeg_bytes()).status_code == 200


# ------------------------------------------------------------------------------ a real server


@pytest.fixture(scope="module")
def live(predictor):
    """A real server, run as `coronet serve` runs it (its protocol, connection cap and timeouts)."""
    with LiveServer(create_app(predictor=predictor, max_upload_bytes=LIMIT), **server_options(16)) as url:
        yield url


def test_declared_huge_body_is_refused_before_it_is_sent(live):
    """A 10 GB Content-Length is answered 413 at once: the server does not wait for the body."""
    port = int(live.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(
            b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 10000000000\r\n\r\n"
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = connection.recv(4096)
            if not chunk:
                break
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert "too large" in json.loads(body)["error"]
    # An ordinary client sending the whole body gets the 413 too, not a reset connection.
    response = httpx.post(
        live + "/v1/predict", files={"file": ("big.jpg", jpeg_bytes() + bytes(8 * LIMIT))}, timeout=60
    )
    assert response.status_code == 413 and "too large" in response.json()["error"]
    assert httpx.get(live + "/v1/health").json()["status"] == "ok"


def test_load_200_requests_from_8_clients(live, predictor, xray_paths):
    """Concurrent requests (some with Grad-CAM) get exactly the answers of sequential calls; no errors."""
    films = [(p.name, p.read_bytes()) for p in xray_paths]
    expected = predictor.probabilities([read_image(p) for p in xray_paths])
    local = threading.local()

    def call(i: int):
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=live, timeout=120)
        k = i % len(films)
        params = {"cam": "true"} if i % 10 == 0 else None
        response = local.client.post("/v1/predict", files={"file": films[k]}, params=params)
        return k, response.status_code, response.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(call, range(200)))
    assert [status for _, status, _ in results] == [200] * 200
    for k, _, body in results:
        assert body["file"] == films[k][0]
        np.testing.assert_allclose(list(body["probabilities"].values()), expected[k], atol=1e-5)
    assert sum("cam" in body for _, _, body in results) == 20
    assert httpx.get(live + "/v1/health").json()["status"] == "ok"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_coronet_serve(log: Path, port: int, *arguments: str, code: str = "from coronet.cli import app; app()"):
    """``coronet serve ARGUMENTS --port PORT`` as its own process, logging to ``log`` (a file, not a pipe: nobody
    reads a pipe while the server runs, and a full one blocks); returns once /v1/health answers."""
    with open(log, "wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, "-c", code, *arguments, "--host", "127.0.0.1", "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    for _ in range(1200):  # up to two minutes for imports and the warm-up on a busy machine
        if server.poll() is not None:
            pytest.fail(f"coronet serve exited ({server.returncode}): {log.read_text(errors='replace')[-2000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=5)
            return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    pytest.fail("coronet serve did not answer within two minutes")


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.kill()
        server.wait(30)


def test_coronet_serve_command(tiny_model_dir, xray_paths, tmp_path):
    """`coronet serve --model DIR --host 127.0.0.1 --port N`, as other tools start it, with its limits; SIGTERM
    stops it with exit status 0 and one line in the log."""
    port, log = _free_port(), tmp_path / "serve.log"
    url = f"http://127.0.0.1:{port}"
    options = ["--max-concurrency", "8", "--max-uploads", "5", "--max-pixels", "20000000"]
    server = _start_coronet_serve(log, port, "serve", "--model", str(tiny_model_dir), *options)
    try:
        health = httpx.get(url + "/v1/health", timeout=30).json()
        assert health["status"] == "ok" and health["model"] == "coronet-test_resnet"
        assert (health["max_concurrency"], health["max_uploads"]) == (8, 5)
        film = xray_paths[3]
        response = httpx.post(url + "/v1/predict", files={"file": (film.name, film.read_bytes())}, timeout=60)
        assert response.status_code == 200 and response.json()["file"] == film.name
        malformed = httpx.post(
            url + "/v1/predict",
            content=b"\x00\x90 not multipart",
            headers={"content-type": "multipart/form-data; boundary=x"},
            timeout=30,
        )
        assert malformed.status_code == 400
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0  # a graceful shutdown exits 0, not by the signal (-15 / 143)
    finally:
        _stop(server)
    text = log.read_text(errors="replace")
    # the library's log lines reach stderr through the command line's handler, each once
    shutdown = "coronet serve: shutting down; requests in progress were finished (exit status 0)"
    assert text.count(shutdown) == 1 and "Traceback" not in text, text[-2000:]
    # the multipart parser's warning about the malformed body: through the service's logger, not bare
    parser = [line for line in text.splitlines() if "Expected boundary character" in line]
    assert parser == ["coronet serve: multipart parser: Expected boundary character 45, got 0 at index 2"], text


#: `coronet serve` whose predictions wait while the file named by the first argument exists (and say so by
#: touching FILE.started), so that SIGTERM finds a prediction in flight.
_HELD_SERVE = """
import pathlib, sys, time
from coronet.deploy.predict import Predictor

hold, plain = pathlib.Path(sys.argv[1]), Predictor.probabilities

def held(self, images):
    if hold.exists():
        hold.with_suffix(".started").touch()
        for _ in range(600):
            if not hold.exists():
                break
            time.sleep(0.1)
    return plain(self, images)

Predictor.probabilities = held
from coronet.cli import app
app(args=sys.argv[2:], prog_name="coronet")
"""


def test_sigterm_answers_a_stalled_upload_503_and_finishes_the_prediction_in_flight(
    tiny_model_dir, xray_paths, tmp_path
):
    """SIGTERM with one upload stalled mid-body and one prediction in flight: the upload gets a JSON 503 at once
    ("server shutting down"), the server stops accepting, the prediction is finished and answered 200, the log has
    no traceback, and the exit status is 0."""
    port, log, hold = _free_port(), tmp_path / "serve.log", tmp_path / "hold"
    url = f"http://127.0.0.1:{port}"
    server = _start_coronet_serve(log, port, str(hold), "serve", "--model", str(tiny_model_dir), code=_HELD_SERVE)
    stalled = _stalled_upload(url)
    try:
        film = xray_paths[3]
        head, body = _multipart_request(film.name, film.read_bytes())
        hold.touch()
        with socket.create_connection(("127.0.0.1", port), timeout=60) as predicting:
            predicting.sendall(head + body)
            for _ in range(600):
                if hold.with_suffix(".started").exists():
                    break
                time.sleep(0.1)
            else:
                pytest.fail("the prediction never started")
            health = httpx.get(url + "/v1/health", timeout=30).json()
            assert (health["uploads_in_progress"], health["predictions_in_progress"]) == (1, 1)

            server.send_signal(signal.SIGTERM)
            status, answer = _read_answer(stalled)
            assert status.startswith("HTTP/1.1 503"), (status, answer)
            assert json.loads(answer) == {"error": "server shutting down: the upload was not complete; send it again"}
            for _ in range(300):  # the listening socket closes: the shutdown has begun
                try:
                    httpx.get(url + "/v1/health", timeout=5)
                except httpx.TransportError:
                    break
                time.sleep(0.1)
            else:
                pytest.fail("still accepting connections 30 s after SIGTERM")
            assert server.poll() is None  # the prediction in flight holds the shutdown
            hold.unlink()
            status, answer = _read_answer(predicting)
        assert status.startswith("HTTP/1.1 200"), (status, answer)
        assert json.loads(answer)["file"] == film.name
        assert server.wait(30) == 0
    finally:
        stalled.close()
        _stop(server)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "CancelledError" not in text, text[-3000:]
    assert text.count("coronet serve: shutting down; requests in progress were finished (exit status 0)") == 1


def test_predict_and_serve_share_one_pixel_limit(client, tiny_model_dir, tmp_path):
    """A 7000 x 7000 16-bit PNG (49 million pixels: under Pillow's 89.5 million, over the shared 40 million) is
    refused by both, in the same words; both --helps state the one default, and the command line's defaults are
    the library's."""
    import inspect

    from typer.testing import CliRunner

    from coronet.cli import app
    from coronet.cli.deploy import serve as serve_command
    from coronet.data.imageio import DEFAULT_MAX_PIXELS
    from coronet.deploy.serve import DEFAULT_MAX_UPLOADS, DEFAULT_UPLOAD_TIMEOUT

    big = tmp_path / "big16.png"
    Image.new("I;16", (7000, 7000)).save(big)
    problem = "image too large (49000000 pixels, limit 40000000): possible decompression bomb"
    assert upload(client, big.name, big.read_bytes()).json() == {"error": f"{big.name}: {problem}"}
    result = CliRunner().invoke(app, ["predict", str(big), "--model", str(tiny_model_dir)])
    assert result.exit_code == 1 and f"{big}: {problem}" in result.output.splitlines(), result.output
    assert DEFAULT_MAX_PIXELS == 40_000_000
    for command in ("predict", "serve"):
        shown = CliRunner().invoke(app, [command, "--help"]).output
        text = " ".join(shown.replace("\u2502", " ").split())  # rich's box sides between wrapped lines
        assert f"the same default for coronet predict and coronet serve ({DEFAULT_MAX_PIXELS})" in text, text
    defaults = {name: p.default for name, p in inspect.signature(serve_command).parameters.items()}
    assert (defaults["max_pixels"], defaults["max_uploads"], defaults["upload_timeout"]) == (
        DEFAULT_MAX_PIXELS,
        DEFAULT_MAX_UPLOADS,
        DEFAULT_UPLOAD_TIMEOUT,
    )


def _multipart_request(name: str, content: bytes) -> tuple[bytes, bytes]:
    """The head and the body of a POST /v1/predict uploading ``content`` as ``name``."""
    boundary = b"coronet-test-boundary-7f3a"
    body = (
        (
            b"--"
            + boundary
            + b'\r\nContent-Disposition: form-data; name="file"; filename="'
            + name.encode()
            + b'"\r\n\r\n'
        )
        + content
        + b"\r\n--"
        + boundary
        + b"--\r\n"
    )
    head = (
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary="
        + boundary
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
    )
    return head, body


def _read_answer(connection: socket.socket) -> tuple[str, bytes]:
    """(status line, body) of one HTTP answer with a Content-Length, read from a raw socket."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data.decode("latin-1"), b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(v) for k, _, v in (x.partition(":") for x in lines[1:]) if k.lower() == "content-length"), 0)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return lines[0], body


def test_coronet_serve_refuses_a_bad_model_dir_and_bad_limits(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from coronet.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path)])
    assert result.exit_code == 2 and "not a model directory" in result.output
    for option, value in (
        ("--max-upload-mb", "0"),
        ("--max-upload-mb", "0.5"),
        ("--max-concurrency", "0"),
        ("--max-uploads", "0"),
        ("--model-threads", "0"),
    ):
        result = CliRunner().invoke(app, ["serve", "--model", str(tiny_model_dir), option, value])
        assert result.exit_code == 2 and option in result.output, (option, result.output)


def test_serve_sets_the_concurrency_limit_and_shares_the_cpus(tiny_model_dir, monkeypatch):
    """serve() passes limit_concurrency to uvicorn and gives each model thread its share of PyTorch's threads."""
    import os

    import torch
    import uvicorn

    from coronet.deploy import serve as serve_module

    calls = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda server, sockets=None: calls.append(server.config))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    threads = torch.get_num_threads()
    try:
        serve_module.serve(tiny_model_dir, model_threads=4)
        assert torch.get_num_threads() == 2
        serve_module.serve(tiny_model_dir, model_threads=3, max_concurrency=5, max_uploads=10)
        assert torch.get_num_threads() == 2  # 8 // 3
        serve_module.serve(tiny_model_dir)  # default: 8 model threads on 8 CPUs
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    # uvicorn's connection cap stands behind the upload and prediction slots: their numbers plus 32
    assert [c.limit_concurrency for c in calls] == [64 + (4 * 4 + 8) + 32, 10 + 5 + 32, 64 + (4 * 8 + 8) + 32]
    # the guarded protocol, with the upload timeout as the deadline for a request's headers
    assert all(issubclass(c.http, GuardedH11Protocol) and c.http.header_timeout == 30 for c in calls)
    assert all(c.timeout_graceful_shutdown == 5 for c in calls)


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def _closed_by_server(client: socket.socket, wait: float = 0.0) -> bytes | None:
    """What the server sent before closing ``client`` (b"" for nothing), or None while it is still open."""
    import select

    data = b""
    while select.select([client], [], [], wait if not data else max(wait, 10))[0]:  # once it answers, it closes
        try:
            chunk = client.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return None


def test_idle_connections_make_room_busy_ones_count(predictor):
    """At the connection cap (3 here), a new connection closes an idle keep-alive one and is served; connections
    with a request in progress are never closed for room, and when they alone fill the cap the next request gets
    uvicorn's 503."""
    options = {**server_options(1, upload_timeout=20), "limit_concurrency": 3}
    with LiveServer(create_app(predictor=predictor, max_upload_bytes=LIMIT, warm_up=False), **options) as url:
        kept = _connect(url)
        kept.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_answer(kept)[0].startswith("HTTP/1.1 200")  # kept open (keep-alive), idle now
        busy = [_stalled_upload(url)]
        time.sleep(0.3)
        try:
            assert httpx.get(url + "/v1/health", timeout=30).status_code == 200  # 3 connections: the idle one went
            assert _closed_by_server(kept, wait=10) == b""
            busy.append(_stalled_upload(url))  # two uploads in progress, and nothing idle left to close
            time.sleep(0.3)
            full = httpx.get(url + "/v1/health", timeout=30)
            assert full.status_code == 503 and full.headers["content-type"].startswith("text/plain")
            assert all(_closed_by_server(c) is None for c in busy)  # never closed to make room
        finally:
            for client in [kept, *busy]:
                client.close()
        for _ in range(100):  # the uploads gone: room again
            if httpx.get(url + "/v1/health", timeout=30).status_code == 200:
                break
            time.sleep(0.05)
        else:
            pytest.fail("still 503 after the connections closed")


def test_a_flood_of_idle_connections_cannot_lock_out_health(predictor):
    """100 connections that send nothing or unfinished headers, against a cap of 64 open connections: /v1/health
    still answers 200 (uvicorn alone answers 503 once ~64 are open), and the server closes the idle connections
    beyond the cap, the oldest first, those with part of a request answered 503 first."""
    options = server_options(8, upload_timeout=30, max_uploads=24)
    assert options["limit_concurrency"] == 64
    with LiveServer(create_app(predictor=predictor, max_upload_bytes=LIMIT, warm_up=False), **options) as url:
        flood = []
        try:
            for i in range(100):
                client = _connect(url)
                if i % 2:
                    client.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; ")
                flood.append(client)
            health = httpx.get(url + "/v1/health", timeout=30)
            assert health.status_code == 200 and health.json()["status"] == "ok"
            closed: dict[int, bytes] = {}
            for _ in range(100):  # the closes travel through the event loop: wait a little for them
                closed = {i: data for i, c in enumerate(flood) if (data := _closed_by_server(c)) is not None}
                if len(closed) >= 38:
                    break
                time.sleep(0.05)
            # 101 connections, at most 63 open beside a new one: 38 closed, the oldest (none was ever served)
            assert len(closed) == 38 and max(closed) < 50, sorted(closed)
            partial = [data for i, data in closed.items() if i % 2]
            assert all(data == b"" for i, data in closed.items() if not i % 2)  # sent nothing: just closed
            assert all(data == b"" or data.startswith(b"HTTP/1.1 503") for data in partial)
            assert any(b"server at its connection limit" in data for data in partial)
            for _ in range(5):  # and again: each new connection makes its own room
                assert httpx.get(url + "/v1/health", timeout=30).status_code == 200
        finally:
            for client in flood:
                client.close()


def test_unfinished_headers_and_silence_are_closed_within_the_upload_timeout(predictor):
    """A connection must complete a request's headers within the upload timeout (1.5 s here) of opening: the
    issue's unfinished POST is answered 408 and closed, a silent socket closed, a header sent a byte at a time is
    cut off all the same (a deadline, not a wait between bytes); a request sent in time is served."""
    options = server_options(8, upload_timeout=1.5)
    with LiveServer(create_app(predictor=predictor, max_upload_bytes=LIMIT, warm_up=False), **options) as url:
        unfinished, silent, trickle = (_connect(url) for _ in range(3))
        try:
            unfinished.sendall(
                b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=Q\r\n"
            )
            header = b"GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 200
            trickled = 0
            for byte in header:  # one byte every 0.1 s: 20 s for the whole header, if the server let it
                if _closed_by_server(trickle) is not None:
                    break
                try:
                    trickle.sendall(bytes([byte]))
                except OSError:
                    break
                trickled += 1
                time.sleep(0.1)
            assert trickled < len(header)  # cut off before the header was complete
            answer = _closed_by_server(unfinished, wait=20)
            assert answer is not None and answer.startswith(b"HTTP/1.1 408"), answer
            assert "request headers not complete within 1.5 s" in json.loads(answer.partition(b"\r\n\r\n")[2])["error"]
            assert _closed_by_server(silent, wait=20) == b""
        finally:
            for client in (unfinished, silent, trickle):
                client.close()
        assert httpx.get(url + "/v1/health", timeout=30).status_code == 200


class _SlowCam(Predictor):
    """A Predictor whose Grad-CAM waits until the test lets it go."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cam_started, self.cam_release = threading.Event(), threading.Event()

    def heatmaps(self, images, classes):
        self.cam_started.set()
        assert self.cam_release.wait(60)
        return super().heatmaps(images, classes)


def test_grad_cam_does_not_hold_the_model_threads(tiny_model_dir, xray_paths):
    """One model thread; Grad-CAM requests in progress and queued; a plain prediction is still answered."""
    slow = _SlowCam(tiny_model_dir)
    film = (xray_paths[0].name, xray_paths[0].read_bytes())
    with (
        LiveServer(create_app(predictor=slow, max_upload_bytes=LIMIT, model_threads=1, warm_up=False)) as url,
        ThreadPoolExecutor(3) as pool,
    ):

        def post(params=None):
            return httpx.post(url + "/v1/predict", files={"file": film}, params=params, timeout=120)

        cams = [pool.submit(post, {"cam": "true"}) for _ in range(2)]
        assert slow.cam_started.wait(60)
        time.sleep(0.3)  # the second Grad-CAM request has been predicted and waits for the Grad-CAM slot
        try:
            plain = post()
            assert plain.status_code == 200 and "cam" not in plain.json()
            assert not any(c.done() for c in cams)  # the heat maps are still waiting
        finally:
            slow.cam_release.set()
        assert [c.result().status_code for c in cams] == [200, 200]
        assert all(c.result().json()["cam_class"] == c.result().json()["predicted_class"] for c in cams)


def _stalled_upload(url: str) -> socket.socket:
    """A client that sends a prediction request's headers and part of its body, then nothing."""
    host, port = url.removeprefix("http://").split(":")
    client = socket.create_connection((host, int(port)), timeout=30)
    body = b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n\r\n\x89PNG'
    client.sendall(
        b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 100000\r\n\r\n" + body
    )
    return client


def _health_once(url: str, key: str, value) -> dict:
    """/v1/health once its ``key`` says ``value`` (the server reads a new connection's request when its event loop
    gets to it: on a busy machine that can take a moment)."""
    for _ in range(200):
        health = httpx.get(url + "/v1/health", timeout=10).json()
        if health[key] == value:
            return health
        time.sleep(0.05)
    pytest.fail(f"/v1/health never said {key} = {value}: {health}")


def _answers_until_closed(clients: list[socket.socket]) -> list[str]:
    answers = []
    for client in clients:
        client.settimeout(20)
        answer = b""
        while chunk := client.recv(4096):  # the server closes the connection after its answer
            answer += chunk
        answers.append(answer.decode("latin-1"))
    return answers


def test_stalled_uploads_hold_no_prediction_slot(predictor, xray_paths):
    """Two prediction slots and six uploads stalled mid-body: the uploads hold upload slots only, so a good film is
    predicted (200) while they wait, and they are still waiting afterwards."""
    app = create_app(predictor=predictor, max_upload_bytes=LIMIT, max_concurrency=2, max_uploads=8, warm_up=False)
    with LiveServer(app, **server_options(2, max_uploads=8)) as url:
        stalled = [_stalled_upload(url) for _ in range(6)]
        try:
            health = _health_once(url, "uploads_in_progress", 6)
            assert health["predictions_in_progress"] == 0 and health["max_concurrency"] == 2
            film = xray_paths[0]
            response = httpx.post(url + "/v1/predict", files={"file": (film.name, film.read_bytes())}, timeout=60)
            assert response.status_code == 200, response.text
            assert response.json()["file"] == film.name
            assert httpx.get(url + "/v1/health", timeout=10).json()["uploads_in_progress"] == 6
            assert all(_closed_by_server(client) is None for client in stalled)  # still open, still waiting
        finally:
            for client in stalled:
                client.close()


def test_uploads_past_max_uploads_get_503_and_stalled_ones_time_out(predictor, xray_paths):
    """--max-uploads 3: three stalled uploads fill it, and a fourth upload gets a JSON 503 with Retry-After while
    health answers; the stalled ones get their 408 at the upload timeout (3 s here), and uploads are taken again."""
    app = create_app(predictor=predictor, max_upload_bytes=LIMIT, max_uploads=3, upload_timeout=3, warm_up=False)
    film = (xray_paths[0].name, xray_paths[0].read_bytes())
    with LiveServer(app, **server_options(16, upload_timeout=3, max_uploads=3)) as url:
        stalled = [_stalled_upload(url) for _ in range(3)]
        try:
            assert _health_once(url, "uploads_in_progress", 3)["max_uploads"] == 3
            fourth = httpx.post(url + "/v1/predict", files={"file": film}, timeout=10)
            assert fourth.status_code == 503 and fourth.headers["retry-after"] == "1"
            assert fourth.headers["content-type"] == "application/json"
            assert fourth.json() == {"error": "server busy: 3 uploads being received (limit 3); try again shortly"}
            answers = _answers_until_closed(stalled)
            assert all(a.startswith("HTTP/1.1 408") and "upload stalled: no data for 3 s" in a for a in answers)
        finally:
            for client in stalled:
                client.close()
        after = httpx.post(url + "/v1/predict", files={"file": film}, timeout=60)
        assert after.status_code == 200, after.text
        assert httpx.get(url + "/v1/health", timeout=10).json()["uploads_in_progress"] == 0


class _HeldPredictor(Predictor):
    """A Predictor whose predictions, once ``hold`` is set, wait until the test releases them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hold, self.held, self.release = threading.Event(), threading.Event(), threading.Event()

    def probabilities(self, images):
        if self.hold.is_set():
            self.held.set()
            assert self.release.wait(60)
        return super().probabilities(images)


def test_full_prediction_slots_answer_503_at_once(tiny_model_dir, xray_paths):
    """One prediction slot, taken by a prediction in progress: the next film is answered with a JSON 503 at once
    (not queued behind it), and the first is answered 200 once it finishes."""
    held = _HeldPredictor(tiny_model_dir)
    film = (xray_paths[1].name, xray_paths[1].read_bytes())
    app = create_app(predictor=held, max_upload_bytes=LIMIT, model_threads=2, max_concurrency=1, warm_up=False)
    with LiveServer(app) as url, ThreadPoolExecutor(1) as pool:
        held.hold.set()
        first = pool.submit(httpx.post, url + "/v1/predict", files={"file": film}, timeout=120)
        try:
            assert held.held.wait(60)
            health = httpx.get(url + "/v1/health", timeout=10).json()
            assert health["predictions_in_progress"] == 1 and health["uploads_in_progress"] == 0
            busy = httpx.post(url + "/v1/predict", files={"file": film}, timeout=30)
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert busy.json() == {"error": "server busy: 1 predictions in progress (limit 1); try again shortly"}
        finally:
            held.release.set()
        assert first.result().status_code == 200 and first.result().json()["file"] == film[0]


def test_a_request_cancelled_at_the_end_of_the_grace_period_gets_a_json_503():
    """uvicorn cancels what still runs when the shutdown's grace period ends; the request is answered 503 in JSON
    and the cancellation ends there, instead of uvicorn's plain 500 and a traceback in the log."""
    import asyncio

    from coronet.deploy.serve.app import RequestsInFlight

    counts = {"in_progress": 0, "cancelled": 0}
    sent: list[dict] = []

    async def never_done(scope, receive, send):
        await asyncio.sleep(60)

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def cancel_midway():
        scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": []}
        task = asyncio.create_task(RequestsInFlight(never_done, counts)(scope, receive, send))
        await asyncio.sleep(0.05)
        assert counts["in_progress"] == 1
        task.cancel()
        await task  # returns: no CancelledError for uvicorn to log

    asyncio.run(cancel_midway())
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 503
    assert json.loads(sent[1]["body"])["error"].startswith("server shutting down")
    assert counts == {"in_progress": 0, "cancelled": 1}


def test_the_worst_source_false_covid_rate_decides_the_warning(tiny_model_dir):
    from coronet.deploy.predict import training_facts
    from coronet.models.modeldir import read_card

    card = read_card(tiny_model_dir)[0]
    measured = {**card, "false_covid_by_source": {"worst": {"source": "cohen", "rate": 0.48, "ci": [0.3, 0.6]}}}
    facts = training_facts(measured)
    assert facts["worst_false_covid_rate"] == 0.48 and facts["worst_false_covid_source"] == "cohen"
    assert "48% of the films without COVID-19 from cohen" in facts["source_warning"]
    measured["false_covid_by_source"]["worst"]["rate"] = 0.2  # at the threshold: no warning
    assert training_facts(measured)["source_warning"] is None
