"""An archive downloaded into ``DATA/.downloads/``: resumed, checked against its sha256 and recorded.

An interrupted download resumes (``Range``, guarded by ``If-Range``); ``<name>.json`` records a finished one, so
it is never fetched twice."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from coronet import __version__

from ..sources import SourceSpec
from .errors import FetchError

# The logger of the module the fetch was before it was a package: one for all its steps.
logger = logging.getLogger("coronet.data.fetch")

CHUNK = 1 << 20  # bytes per read/write while streaming
_UNSIZED_PROGRESS_STEP = 100 << 20  # without a Content-Length, report every 100 MiB
_USER_AGENT = f"coronet/{__version__} (python-urllib)"


def download_archive(source: SourceSpec, url: str, downloads: Path, *, force: bool, timeout: float) -> Path:
    """Return a complete, verified archive in ``downloads``, reusing or resuming what is there."""
    downloads.mkdir(parents=True, exist_ok=True)
    archive = downloads / f"{source.name}.zip"
    part = downloads / f"{source.name}.zip.part"
    record = downloads / f"{source.name}.json"

    if force:
        for stale in (archive, part, _part_meta_path(part)):
            stale.unlink(missing_ok=True)
    elif archive.exists():
        if _sha256(archive) == _expected_sha256(source, record):
            logger.info(f"{source.name}: using downloaded {archive}")
            return archive
        logger.info(f"{source.name}: {archive} does not match its recorded checksum; downloading again")
        archive.unlink()

    _stream_to_part(source, url, part, timeout=timeout)

    actual = _sha256(part)
    if source.download.sha256 and actual != source.download.sha256.lower():
        part.unlink()
        _part_meta_path(part).unlink(missing_ok=True)
        raise FetchError(
            f"{source.name}: checksum mismatch for {url}: expected sha256 "
            f"{source.download.sha256}, got {actual}; the corrupt download was deleted"
        )
    part.replace(archive)
    _part_meta_path(part).unlink(missing_ok=True)
    _write_json(
        record,
        {
            "name": source.name,
            "url": url,
            "sha256": actual,
            "size": archive.stat().st_size,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "verified": bool(source.download.sha256),
        },
    )
    note = "verified" if source.download.sha256 else "recorded; no published checksum to verify against"
    logger.info(f"{source.name}: sha256 {actual} ({note})")
    return archive


def _expected_sha256(source: SourceSpec, record: Path) -> str | None:
    """The known checksum, else the one recorded when the archive was downloaded."""
    if source.download.sha256:
        return source.download.sha256.lower()
    try:
        return json.loads(record.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _stream_to_part(source: SourceSpec, url: str, part: Path, *, timeout: float) -> None:
    """Stream ``url`` into ``part``, continuing an existing partial file when the server allows."""
    meta_path = _part_meta_path(part)
    meta = _read_json(meta_path)
    offset = part.stat().st_size if part.exists() else 0
    if offset and meta.get("url") != url:
        offset = 0  # the partial file came from another URL: its bytes may not be a prefix of this one

    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("validator"):
            # If-Range: the server sends the rest only if the file is unchanged, else all of it,
            # so a remote that changed since the first attempt cannot produce a spliced archive.
            headers["If-Range"] = meta["validator"]
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as error:
        if error.code == 416 and offset:
            # The partial file is not shorter than the remote one: it cannot be resumed.
            part.unlink()
            return _stream_to_part(source, url, part, timeout=timeout)
        raise FetchError(
            f"{source.name}: HTTP {error.code} {error.reason} from {url}; {_manual_hint(source)}"
        ) from error
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        raise FetchError(
            f"{source.name}: cannot reach {url} ({_reason(error)}); check the connection and rerun"
        ) from error
    except ValueError as error:  # urllib's answer to a malformed URL
        raise FetchError(f"{source.name}: invalid URL {url!r} ({error})") from error

    with response:
        status = response.status or 200  # file:// URLs have no status
        if status == 206 and _content_range_start(response) != offset:
            if not offset:
                raise FetchError(f"{source.name}: {url} sent part of the file unasked; {_manual_hint(source)}")
            # A range we did not ask for: useless, so drop the partial file and ask for everything.
            response.close()
            part.unlink()
            return _stream_to_part(source, url, part, timeout=timeout)
        if status != 206:
            offset = 0  # the server ignored the Range (or If-Range saw a changed file): start over
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/html"):
            raise FetchError(f"{source.name}: {url} returned a web page, not a zip archive; {_manual_hint(source)}")
        _write_json(meta_path, {"url": url, "validator": _validator(response)})
        total = _total_size(response, offset)
        size = _human(total) if total else "size unknown"
        resume = f", resuming at {_human(offset)}" if offset else ""
        logger.info(f"{source.name}: downloading {url} ({size}{resume})")
        done = _copy_with_progress(source, response, part, offset, total)

    if total is not None and done != total:
        raise FetchError(
            f"{source.name}: download interrupted after {_human(done)} of {_human(total)}; rerun to resume from {part}"
        )


def _copy_with_progress(source: SourceSpec, response, part: Path, offset: int, total: int | None) -> int:
    """Append (or write from zero) the response body to ``part``; log every ~10 %. Returns bytes on disk."""
    done = offset
    step = total / 10 if total else _UNSIZED_PROGRESS_STEP
    next_report = (done // step + 1) * step
    try:
        with open(part, "ab" if offset else "wb") as out:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if done >= next_report:
                    logger.info(f"{source.name}: {done * 100 // total}%" if total else f"{source.name}: {_human(done)}")
                    next_report = (done // step + 1) * step
    except (OSError, http.client.HTTPException) as error:
        raise FetchError(
            f"{source.name}: download interrupted after {_human(done)} ({_reason(error)}); rerun to resume from {part}"
        ) from error
    return done


def _content_range_start(response) -> int | None:
    """First byte of a ``Content-Range: bytes START-END/TOTAL`` header, if well formed."""
    value = response.headers.get("Content-Range", "")
    unit, _, span = value.partition(" ")
    try:
        return int(span.split("-", 1)[0]) if unit == "bytes" else None
    except ValueError:
        return None


def _total_size(response, offset: int) -> int | None:
    """Full archive size: from Content-Range on a resume, else offset + Content-Length."""
    full = response.headers.get("Content-Range", "").rpartition("/")[2]
    if offset and full.isdigit():
        return int(full)
    length = response.headers.get("Content-Length", "")
    return offset + int(length) if length.isdigit() else None


def _validator(response) -> str | None:
    """A value for If-Range: a strong ETag, else Last-Modified (weak ETags are not allowed there)."""
    etag = response.headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return response.headers.get("Last-Modified")


def _part_meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _manual_hint(source: SourceSpec) -> str:
    hint = f"the link may have moved: get it by hand from {source.homepage} or pass another URL"
    return f"{hint} ({source.note})" if source.note else hint


def _reason(error: BaseException) -> str:
    reason = getattr(error, "reason", None) or error
    return str(reason) or type(error).__name__


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def _human(size: float) -> str:
    """Decimal units, as download sites quote them: 1234567 -> '1.2 MB'."""
    if size < 1000:
        return f"{size:.0f} B"
    for unit in ("KB", "MB", "GB"):
        size /= 1000
        if size < 1000 or unit == "GB":
            break
    return f"{size:.1f} {unit}"
