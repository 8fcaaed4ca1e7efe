"""Tests for coronet.data.fetch against a local HTTP server on 127.0.0.1 (never the internet).

The server serves tiny zip archives with the same internal layout as the real ones,
honours ``Range``/``If-Range`` (so resuming can be tested), records every request,
and can cut a response short to simulate an interrupted download.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import re
import shutil
import socket
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from coronet.data.fetch import BASE_URL_ENV, FetchError, fetch_sources, missing_data_help, remote_sources
from coronet.data.sources import SOURCES

# --------------------------------------------------------------------------- archives


def _png(seed: int) -> bytes:
    image = Image.new("L", (16, 16), color=seed % 256)
    image.putpixel((seed % 16, 3), 255 - seed % 256)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:  # stored: big enough to cut mid-way
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


METADATA = b"patientid,finding,view,modality,folder,filename\n1,Pneumonia/Viral/COVID-19,PA,X-ray,images,x.png\n"

ARCHIVES = {
    "cohen": {
        "covid-chestxray-dataset-master/metadata.csv": METADATA,
        "covid-chestxray-dataset-master/images/x.png": _png(1),
        "covid-chestxray-dataset-master/images/y.png": _png(2),
        "covid-chestxray-dataset-master/README.md": b"not installed\n",
        "covid-chestxray-dataset-master/annotations/images/z.png": _png(3),  # deeper "images": not chosen
    },
    "kaggle": {
        "ChestXRay2017/chest_xray/train/NORMAL/IM-0001-0001.jpeg": _png(4),
        "ChestXRay2017/chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg": _png(5),
        "ChestXRay2017/chest_xray/test/NORMAL/IM-0002-0001.jpeg": _png(6),
        "ChestXRay2017/chest_xray/test/PNEUMONIA/person2_virus_2.jpeg": _png(7),
        "ChestXRay2017/chest_xray/.DS_Store": b"junk",
        "__MACOSX/ChestXRay2017/chest_xray/train/NORMAL/._IM-0001-0001.jpeg": b"junk",
    },
    "ozturk": {
        "COVID-19-master/X-Ray Image DataSet/Covid-19/a.png": _png(8),
        "COVID-19-master/X-Ray Image DataSet/No_findings/00000001_000.png": _png(9),
        "COVID-19-master/X-Ray Image DataSet/Pneumonia/00000002_001.png": _png(10),
        "COVID-19-master/DarkCovidNet for binary classes.ipynb": b"{}",
    },
}


# --------------------------------------------------------------------------- server


class _State:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}  # URL path -> body
        self.requests: list[dict] = []  # one per GET: path, range, if_range
        self.cut_after: dict[str, int] = {}  # URL path -> send only this many bytes, once
        self.honour_range = True
        self.content_type = "application/zip"
        self.lock = threading.Lock()


def _handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            with state.lock:
                state.requests.append(
                    {"path": self.path, "range": self.headers.get("Range"), "if_range": self.headers.get("If-Range")}
                )
                body = state.files.get(self.path)
                cut = state.cut_after.pop(self.path, None)
            if body is None:
                self.send_error(404)
                return
            etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
            start = 0
            wanted = self.headers.get("Range")
            if wanted and state.honour_range and self.headers.get("If-Range", etag) == etag:
                start = int(wanted.removeprefix("bytes=").rstrip("-"))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", state.content_type)
            self.send_header("Content-Length", str(len(body) - start))
            self.send_header("ETag", etag)
            self.end_headers()
            payload = body[start:] if cut is None else body[start : start + cut]
            self.wfile.write(payload)
            self.close_connection = True

        def log_message(self, *args):  # keep test output quiet
            pass

    return Handler


class Server:
    def __init__(self) -> None:
        self.state = _State()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # A short poll interval keeps shutdown() (and so each test's teardown) fast.
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def serve(self, path: str, body: bytes) -> str:
        self.state.files[path] = body
        return self.base + path

    def requests_for(self, path: str) -> list[dict]:
        return [r for r in self.state.requests if r["path"] == path]


@pytest.fixture
def server():
    srv = Server()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_mirror(monkeypatch):
    monkeypatch.delenv(BASE_URL_ENV, raising=False)


@pytest.fixture
def archives(server) -> dict[str, bytes]:
    """Serve the three archives at /<name>.zip; return name -> archive bytes."""
    built = {name: _zip(entries) for name, entries in ARCHIVES.items()}
    for name, body in built.items():
        server.serve(f"/{name}.zip", body)
    return built


def _urls(server, names=None) -> dict[str, str]:
    names = names or remote_sources()
    return {name: f"{server.base}/{name}.zip" for name in names}


def _fetch(data: Path, server, names=None, **kwargs):
    kwargs.setdefault("urls", _urls(server, names or remote_sources()))
    return fetch_sources(data, names, timeout=5, **kwargs)


def _with_sha256(monkeypatch, name: str, sha256: str) -> None:
    spec = SOURCES[name]
    remote = dataclasses.replace(spec.remote, sha256=sha256)
    monkeypatch.setitem(SOURCES, name, dataclasses.replace(spec, remote=remote))


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- tests


def test_fetches_all_three_into_the_layout_the_readers_expect(tmp_path, server, archives, caplog):
    caplog.set_level(logging.INFO, logger="coronet")
    data = tmp_path / "data"
    result = _fetch(data, server)

    assert result == {
        "cohen": data / "cohen-covid",
        "kaggle": data / "kaggle-pneumonia",
        "ozturk": data / "ozturk-dataset2",
    }
    assert _files(data / "cohen-covid") == {"metadata.csv", "images/x.png", "images/y.png"}
    assert (data / "cohen-covid/metadata.csv").read_bytes() == METADATA
    assert _files(data / "kaggle-pneumonia") == {
        "chest_xray/train/NORMAL/IM-0001-0001.jpeg",
        "chest_xray/train/PNEUMONIA/person1_bacteria_1.jpeg",
        "chest_xray/test/NORMAL/IM-0002-0001.jpeg",
        "chest_xray/test/PNEUMONIA/person2_virus_2.jpeg",
    }
    assert _files(data / "ozturk-dataset2") == {
        "Covid-19/a.png",
        "No_findings/00000001_000.png",
        "Pneumonia/00000002_001.png",
    }
    with Image.open(data / "ozturk-dataset2/Covid-19/a.png") as image:
        assert image.size == (16, 16)
    # Nothing else is left in the data directory: no staging folders, no partial downloads.
    assert sorted(p.name for p in data.iterdir()) == [
        ".downloads",
        "cohen-covid",
        "kaggle-pneumonia",
        "ozturk-dataset2",
    ]
    for name, body in archives.items():
        assert (data / ".downloads" / f"{name}.zip").read_bytes() == body
        record = json.loads((data / ".downloads" / f"{name}.json").read_text())
        assert record["sha256"] == hashlib.sha256(body).hexdigest()
        assert record["size"] == len(body) and record["url"].endswith(f"/{name}.zip")
        assert record["verified"] is False and record["date"]
    assert not list((data / ".downloads").glob("*.part*"))
    assert any("cohen: downloading" in line for line in caplog.messages)
    assert any(line.endswith("100%") for line in caplog.messages)


def test_known_checksum_is_verified(tmp_path, server, archives, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="coronet")
    _with_sha256(monkeypatch, "cohen", hashlib.sha256(archives["cohen"]).hexdigest())
    _fetch(tmp_path, server, ["cohen"])
    assert json.loads((tmp_path / ".downloads/cohen.json").read_text())["verified"] is True
    assert any("verified" in line for line in caplog.messages)
    assert (tmp_path / "cohen-covid/images/x.png").exists()


def test_wrong_checksum_raises_and_leaves_no_corrupt_zip(tmp_path, server, archives, monkeypatch):
    _with_sha256(monkeypatch, "cohen", "0" * 64)
    with pytest.raises(FetchError) as caught:
        _fetch(tmp_path, server, ["cohen"])
    message = str(caught.value)
    assert "cohen" in message and "0" * 64 in message
    assert hashlib.sha256(archives["cohen"]).hexdigest() in message
    assert not list((tmp_path / ".downloads").glob("cohen.zip*"))
    assert not (tmp_path / "cohen-covid").exists()


def test_interrupted_download_resumes_with_a_range_request(tmp_path, server, archives, caplog):
    caplog.set_level(logging.INFO, logger="coronet")
    body = archives["kaggle"]
    cut = len(body) // 2
    server.state.cut_after["/kaggle.zip"] = cut

    with pytest.raises(FetchError, match="kaggle.*interrupted.*rerun"):
        _fetch(tmp_path, server, ["kaggle"])
    part = tmp_path / ".downloads/kaggle.zip.part"
    assert part.stat().st_size == cut
    assert not (tmp_path / "kaggle-pneumonia").exists()

    caplog.clear()
    _fetch(tmp_path, server, ["kaggle"])
    last = server.requests_for("/kaggle.zip")[-1]
    assert last["range"] == f"bytes={cut}-"
    assert last["if_range"]  # the ETag from the first response guards against a changed file
    assert any(f"resuming at {cut} B" in line for line in caplog.messages)
    assert (tmp_path / ".downloads/kaggle.zip").read_bytes() == body
    assert not part.exists()
    assert (tmp_path / "kaggle-pneumonia/chest_xray/test/NORMAL/IM-0002-0001.jpeg").exists()


def test_resume_starts_over_when_the_server_ignores_range(tmp_path, server, archives):
    server.state.cut_after["/ozturk.zip"] = 100
    with pytest.raises(FetchError):
        _fetch(tmp_path, server, ["ozturk"])
    server.state.honour_range = False  # answers 200 with the whole file
    _fetch(tmp_path, server, ["ozturk"])
    assert server.requests_for("/ozturk.zip")[-1]["range"] == "bytes=100-"
    assert (tmp_path / ".downloads/ozturk.zip").read_bytes() == archives["ozturk"]


def test_resume_starts_over_when_the_remote_file_changed(tmp_path, server, archives):
    server.state.cut_after["/cohen.zip"] = 200
    with pytest.raises(FetchError):
        _fetch(tmp_path, server, ["cohen"])
    changed = _zip({**ARCHIVES["cohen"], "covid-chestxray-dataset-master/images/new.png": _png(11)})
    server.serve("/cohen.zip", changed)  # new ETag: If-Range makes the server send all of it
    _fetch(tmp_path, server, ["cohen"])
    assert (tmp_path / ".downloads/cohen.zip").read_bytes() == changed
    assert (tmp_path / "cohen-covid/images/new.png").exists()


def test_zip_slip_archive_is_refused(tmp_path, server):
    evil = _zip(
        {
            "covid-chestxray-dataset-master/metadata.csv": METADATA,
            "covid-chestxray-dataset-master/images/x.png": _png(1),
            "covid-chestxray-dataset-master/images/../../../../evil.txt": b"gotcha",
        }
    )
    server.serve("/cohen.zip", evil)
    data = tmp_path / "data"
    with pytest.raises(FetchError, match="cohen.*refusing"):
        _fetch(data, server, ["cohen"])
    assert not list(tmp_path.rglob("evil.txt"))
    assert sorted(p.name for p in data.iterdir()) == [".downloads"]  # no target, no staging left


def test_absolute_member_is_refused(tmp_path, server):
    server.serve("/ozturk.zip", _zip({"/X-Ray Image DataSet/Covid-19/a.png": _png(1)}))
    with pytest.raises(FetchError, match="ozturk.*refusing"):
        _fetch(tmp_path, server, ["ozturk"])
    assert not (tmp_path / "ozturk-dataset2").exists()


def test_installed_source_is_skipped_without_any_request(tmp_path, server, archives, caplog):
    caplog.set_level(logging.INFO, logger="coronet")
    _fetch(tmp_path, server)
    before = len(server.state.requests)
    caplog.clear()
    result = _fetch(tmp_path, server)
    assert len(server.state.requests) == before
    assert set(result) == {"cohen", "kaggle", "ozturk"}
    assert sum("already installed" in line for line in caplog.messages) == 3


def test_downloaded_archive_is_reused_and_force_downloads_again(tmp_path, server, archives, caplog):
    caplog.set_level(logging.INFO, logger="coronet")
    _fetch(tmp_path, server, ["cohen"])
    (tmp_path / "cohen-covid/metadata.csv").unlink()  # damage the install, keep the archive
    with pytest.raises(FetchError, match="cohen.*lacks"):  # not overwritten without force
        _fetch(tmp_path, server, ["cohen"])

    shutil.rmtree(tmp_path / "cohen-covid")
    count = len(server.requests_for("/cohen.zip"))
    caplog.clear()
    _fetch(tmp_path, server, ["cohen"])
    assert len(server.requests_for("/cohen.zip")) == count  # recorded checksum matched: no download
    assert any("using downloaded" in line for line in caplog.messages)
    assert (tmp_path / "cohen-covid/images/x.png").exists()

    (tmp_path / "cohen-covid/stale.txt").write_text("old")
    _fetch(tmp_path, server, ["cohen"], force=True)
    assert len(server.requests_for("/cohen.zip")) == count + 1
    assert not (tmp_path / "cohen-covid/stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".downloads", "cohen-covid"]


def test_base_url_environment_variable_selects_a_mirror(tmp_path, server, monkeypatch):
    for name, entries in ARCHIVES.items():
        server.serve(f"/mirror/{name}.zip", _zip(entries))
    monkeypatch.setenv(BASE_URL_ENV, server.base + "/mirror/")
    result = _fetch(tmp_path, server, urls=None)
    assert set(result) == {"cohen", "kaggle", "ozturk"}
    assert {r["path"] for r in server.state.requests} == {
        "/mirror/cohen.zip",
        "/mirror/kaggle.zip",
        "/mirror/ozturk.zip",
    }


def test_unreachable_url_raises_naming_the_source_and_others_still_install(tmp_path, server, archives):
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    urls = {"cohen": f"http://127.0.0.1:{port}/cohen.zip", "ozturk": f"{server.base}/ozturk.zip"}
    with pytest.raises(FetchError, match=r"^cohen: cannot reach .*rerun"):
        _fetch(tmp_path, server, ["cohen", "ozturk"], urls=urls)
    assert (tmp_path / "ozturk-dataset2/Covid-19/a.png").exists()


def test_http_error_and_web_page_are_reported(tmp_path, server, archives):
    with pytest.raises(FetchError, match="kaggle: HTTP 404.*data.mendeley.com.*account"):
        _fetch(tmp_path, server, ["kaggle"], urls={"kaggle": server.base + "/missing.zip"})
    server.state.content_type = "text/html; charset=utf-8"
    with pytest.raises(FetchError, match="kaggle: .*web page"):
        _fetch(tmp_path, server, ["kaggle"])


def test_file_url_installs_an_archive_downloaded_by_hand(tmp_path):
    archive = tmp_path / "ChestXRay2017.zip"
    archive.write_bytes(_zip(ARCHIVES["kaggle"]))
    fetch_sources(tmp_path / "data", ["kaggle"], urls={"kaggle": archive.as_uri()})
    assert (tmp_path / "data/kaggle-pneumonia/chest_xray/train/NORMAL/IM-0001-0001.jpeg").exists()


def test_unknown_source_is_rejected(tmp_path):
    with pytest.raises(FetchError, match="unknown source.*nih"):
        fetch_sources(tmp_path, ["nih"])


def test_missing_data_help_names_folders_homepages_and_command(tmp_path, server, archives):
    _fetch(tmp_path, server, ["ozturk"])
    text = missing_data_help(tmp_path)
    for folder in (
        "cohen-covid/metadata.csv",
        "cohen-covid/images",
        "kaggle-pneumonia/chest_xray",
        "ozturk-dataset2/Covid-19",
        "ozturk-dataset2/No_findings",
        "ozturk-dataset2/Pneumonia",
    ):
        assert folder in text
    for source in remote_sources().values():
        assert source.homepage in text
    assert f"coronet data fetch --data {tmp_path}" in text
    assert "Kaggle" in text and BASE_URL_ENV in text
    assert "[ok     ] ozturk-dataset2" in text and "[MISSING] cohen-covid" in text


def test_partial_file_longer_than_the_remote_one_is_restarted(tmp_path, server, archives):
    downloads = tmp_path / ".downloads"
    downloads.mkdir()
    (downloads / "ozturk.zip.part").write_bytes(b"x" * (len(archives["ozturk"]) + 10))
    (downloads / "ozturk.zip.part.json").write_text(f'{{"url": "{server.base}/ozturk.zip"}}')
    _fetch(tmp_path, server, ["ozturk"])
    assert [r["range"] for r in server.requests_for("/ozturk.zip")] == [
        f"bytes={len(archives['ozturk']) + 10}-",
        None,
    ]  # 416, then the whole file
    assert (downloads / "ozturk.zip").read_bytes() == archives["ozturk"]


def test_built_in_downloads_are_pinned():
    """GitHub archives of a fixed commit, never of a branch; a checksum, where one is given, is a SHA-256."""
    github = {name: spec.download.url for name, spec in remote_sources().items() if "github.com" in spec.download.url}
    assert set(github) == {"cohen", "ozturk"}
    for name, url in github.items():
        assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+/archive/[0-9a-f]{40}\.zip", url), (name, url)
    for spec in remote_sources().values():
        assert spec.download.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", spec.download.sha256), spec.name
