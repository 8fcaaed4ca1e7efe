"""Download the three public chest X-ray sources into a data directory.

``coronet data fetch --data DIR`` calls :func:`fetch_sources`, which for each source

1. skips it when ``DIR/<target>`` already holds everything (unless ``force``);
2. downloads the archive with :mod:`urllib` to ``DIR/.downloads/<name>.zip.part``,
   resuming an interrupted download with an HTTP ``Range`` request, then renames it
   to ``<name>.zip`` once complete and verified;
3. checks its sha256 (when a checksum is known) and records sha256, url, size and
   date in ``DIR/.downloads/<name>.json``, so a finished archive is never fetched twice;
4. extracts only the folders the readers in :mod:`coronet.sources` need, refusing
   unsafe member names, into a temporary folder beside the target, and renames it
   into place so a failed or interrupted run never leaves a half-installed source.

Resulting layout (what the readers expect)::

    DIR/cohen-covid/metadata.csv
    DIR/cohen-covid/images/...
    DIR/kaggle-pneumonia/chest_xray/{train,test}/{NORMAL,PNEUMONIA}/*.jpeg
    DIR/ozturk-dataset2/{Covid-19,No_findings,Pneumonia}/...

URLs can be overridden per source (``urls=``) or all at once with the environment
variable ``CORONET_FETCH_BASE_URL`` (``<base>/<name>.zip``), e.g. for a mirror; a
``file://`` URL installs an archive downloaded by hand. Only the standard library is used.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from coronet import __version__

from ..errors import CoronetError
from .sources import SOURCES, SourceSpec

logger = logging.getLogger(__name__)

#: Environment variable naming a mirror: each source is fetched from ``<base>/<name>.zip``.
BASE_URL_ENV = "CORONET_FETCH_BASE_URL"
#: Folder under the data directory holding archives, partial downloads and their records.
DOWNLOADS = ".downloads"

_CHUNK = 1 << 20  # bytes per read/write while streaming
_UNSIZED_PROGRESS_STEP = 100 << 20  # without a Content-Length, report every 100 MiB
_USER_AGENT = f"coronet/{__version__} (python-urllib)"
# Finder litter in archives made on macOS; never wanted, and ``__MACOSX/chest_xray``
# would otherwise compete with the real ``chest_xray`` folder.
_JUNK_DIRS = {"__MACOSX"}
_JUNK_FILES = {".DS_Store", "Thumbs.db"}


class FetchError(CoronetError, RuntimeError):
    """A source could not be downloaded, verified or installed (one line, names the source)."""


def remote_sources() -> dict[str, SourceSpec]:
    """The registered sources that can be downloaded (:data:`coronet.data.sources.SOURCES`), by name."""
    return {name: spec for name, spec in SOURCES.items() if spec.remote is not None}


# --------------------------------------------------------------------------- public API


def fetch_sources(
    data_dir: Path,
    names: Sequence[str] | None = None,
    *,
    urls: Mapping[str, str] | None = None,
    force: bool = False,
    timeout: float = 60.0,
) -> dict[str, Path]:
    """Download, verify, and install each named source (default: all three) into data_dir; return name -> installed dir.

    Every source is attempted even when an earlier one fails, so one unreachable host
    does not hold back the others; the failures are then raised together as one
    :class:`FetchError`. Rerunning resumes partial downloads and skips finished sources.
    A source to be got by hand (no download address: ``radiography``, ``source-negatives``) is not
    downloaded: the log says where to get it and where to put it, and it counts as a failure until its
    folder is there.
    """
    data_dir = Path(data_dir)
    selected = list(remote_sources()) if names is None else list(dict.fromkeys(names))
    urls = dict(urls or {})
    unknown = sorted((set(selected) - set(SOURCES)) | (set(urls) - set(remote_sources())))
    if unknown:
        raise FetchError(
            f"unknown source(s) {', '.join(unknown)}; choose from {', '.join(remote_sources())} "
            f"(by hand: {', '.join(sorted(set(SOURCES) - set(remote_sources())))})"
        )

    installed: dict[str, Path] = {}
    failures: list[str] = []
    for name in [name for name in selected if name not in remote_sources()]:
        target = data_dir / SOURCES[name].folder
        if target.is_dir() and any(target.iterdir()):
            logger.info(f"{name}: present at {target} (got by hand)")
            installed[name] = target
        else:
            logger.warning(by_hand_help(SOURCES[name], data_dir))
            failures.append(f"{name}: cannot be downloaded here; get it by hand (see above)")
    for name in [name for name in selected if name in remote_sources()]:
        try:
            installed[name] = _fetch_one(remote_sources()[name], data_dir, urls, force=force, timeout=timeout)
        except FetchError as error:
            failures.append(str(error))
    if failures:
        raise FetchError("; ".join(failures))
    return installed


def missing_data_help(data_dir: Path) -> str:
    """A multi-line message for users whose data directory is missing or incomplete.

    Lists the source folders expected under ``data_dir`` (marking which are present),
    the homepage of each public source, and the ``coronet data fetch`` command.
    """
    data_dir = Path(data_dir)
    lines = [f"The data directory {data_dir} is missing or incomplete. Expected under it:"]
    for source in remote_sources().values():
        status = "ok" if _is_installed(data_dir / source.folder, source) else "MISSING"
        wanted = ", ".join(f"{source.folder}/{dest}" for _, dest in source.download.members)
        lines += [f"  [{status:7}] {wanted}", f"            {source.title}: {source.homepage}"]
    archives = ", ".join(f"{name}.zip" for name in remote_sources())
    lines += [
        "Download all of them (resumable; rerun after an interruption) with:",
        f"  coronet data fetch --data {data_dir}",
        f"Behind a mirror, set {BASE_URL_ENV} to a URL serving {archives}.",
        "By hand: put each source's folders at the paths above.",
        *[f"  {spec.name}: {spec.note}." for spec in remote_sources().values() if spec.note],
        "Optional sources, got by hand (`coronet data fetch --source NAME` says where from): "
        + ", ".join(f"{spec.folder}/" for name, spec in SOURCES.items() if name not in remote_sources()),
    ]
    return "\n".join(lines)


def by_hand_help(source: SourceSpec, data_dir: Path) -> str:
    """Where to get a source that ``coronet data fetch`` cannot download, and where to put it (several lines)."""
    lines = [
        f"{source.name}: {source.title} cannot be downloaded by coronet.",
        f"  get it from: {source.homepage or 'its authors'}",
        f"  put it at:   {Path(data_dir) / source.folder}/",
    ]
    return "\n".join(lines + ([f"  {source.note}."] if source.note else []))


# --------------------------------------------------------------------------- one source


def _fetch_one(
    source: SourceSpec,
    data_dir: Path,
    urls: Mapping[str, str],
    *,
    force: bool,
    timeout: float,
) -> Path:
    target = data_dir / source.folder
    if not force and _is_installed(target, source):
        logger.info(f"{source.name}: already installed at {target}; skipping (use --force to reinstall)")
        return target
    if not force and target.exists():
        # Something partial is there (perhaps copied by hand): do not overwrite it silently.
        raise FetchError(
            f"{source.name}: {target} exists but lacks some of "
            f"{', '.join(dest for _, dest in source.download.members)}; "
            f"move it away or use --force to replace it"
        )
    url = _resolve_url(source, urls)
    archive = _download(source, url, data_dir / DOWNLOADS, force=force, timeout=timeout)
    _install(source, archive, target)
    return target


def _resolve_url(source: SourceSpec, urls: Mapping[str, str]) -> str:
    """Explicit override, then the mirror from the environment, then the built-in URL."""
    if source.name in urls:
        return urls[source.name]
    base = os.environ.get(BASE_URL_ENV, "").strip()
    if base:
        return f"{base.rstrip('/')}/{source.name}.zip"
    return source.download.url


def _is_installed(target: Path, source: SourceSpec) -> bool:
    return target.is_dir() and all((target / dest).exists() for _, dest in source.download.members)


# --------------------------------------------------------------------------- download


def _download(source: SourceSpec, url: str, downloads: Path, *, force: bool, timeout: float) -> Path:
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
            while chunk := response.read(_CHUNK):
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


# --------------------------------------------------------------------------- install


def _install(source: SourceSpec, archive: Path, target: Path) -> None:
    """Extract the wanted members beside ``target`` and rename the result into place."""
    logger.info(f"{source.name}: extracting into {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        count = _extract(source, archive, staging)
        if target.exists():  # only with force: swap the old copy out, then drop it
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            target.rename(old / target.name)
            staging.rename(target)
            shutil.rmtree(old)
        else:
            staging.rename(target)
    except OSError as error:
        raise FetchError(f"{source.name}: cannot install into {target} ({error})") from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(f"{source.name}: installed {count} files at {target}")


def _extract(source: SourceSpec, archive: Path, staging: Path) -> int:
    """Write each wanted member of ``archive`` under ``staging``; return the number of files."""
    try:
        with zipfile.ZipFile(archive) as zf:
            # Check every name before writing anything: a hostile entry anywhere is a red flag.
            members = [(info, _safe_name(source, info.filename)) for info in zf.infolist()]
            members = [(info, path) for info, path in members if not _is_junk(path)]
            count = 0
            for pattern, dest in source.download.members:
                prefix = _locate(source, pattern, [path for _, path in members])
                for info, path in members:
                    if info.is_dir() or not _is_under(path, prefix):
                        continue
                    out = staging.joinpath(dest, *path.parts[len(prefix.parts) :])
                    _check_inside(source, out, staging)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                    count += 1
            return count
    except zipfile.BadZipFile as error:
        # A truncated or non-zip download: drop it so the next run fetches a fresh copy.
        archive.unlink(missing_ok=True)
        raise FetchError(
            f"{source.name}: {archive.name} is not a valid zip archive ({error}); "
            f"it was deleted, rerun to download it again"
        ) from error


def _safe_name(source: SourceSpec, name: str) -> PurePosixPath:
    """The member's path, refusing absolute paths, drive letters and ``..`` (zip-slip)."""
    path = PurePosixPath(name.replace("\\", "/"))  # archives made on Windows may use backslashes
    first = path.parts[0] if path.parts else ""
    if path.is_absolute() or ".." in path.parts or first.endswith(":"):
        raise FetchError(f"{source.name}: refusing archive member {name!r}: its path would escape the target folder")
    return path


def _is_junk(path: PurePosixPath) -> bool:
    return any(part in _JUNK_DIRS for part in path.parts) or path.name in _JUNK_FILES or path.name.startswith("._")


def _locate(source: SourceSpec, pattern: str, paths) -> PurePosixPath:
    """The shallowest file or folder whose trailing path components equal ``pattern``."""
    want = PurePosixPath(pattern).parts
    candidates = set()
    for path in paths:
        # Folders often have no entry of their own in a zip, so consider every ancestor too.
        for depth in range(len(want), len(path.parts) + 1):
            if path.parts[depth - len(want) : depth] == want:
                candidates.add(PurePosixPath(*path.parts[:depth]))
    if not candidates:
        raise FetchError(
            f"{source.name}: the archive has no {pattern!r}; has the upstream layout changed? see {source.homepage}"
        )
    shallowest = min(len(c.parts) for c in candidates)
    best = sorted(c for c in candidates if len(c.parts) == shallowest)
    if len(best) > 1:
        raise FetchError(f"{source.name}: the archive has several {pattern!r}: {', '.join(map(str, best))}")
    return best[0]


def _is_under(path: PurePosixPath, prefix: PurePosixPath) -> bool:
    return path.parts[: len(prefix.parts)] == prefix.parts


def _check_inside(source: SourceSpec, out: Path, root: Path) -> None:
    # Belt and braces behind _safe_name: the resolved destination must stay in the staging folder.
    if not out.resolve().is_relative_to(root.resolve()):
        raise FetchError(f"{source.name}: refusing to write {out} outside {root}")


# --------------------------------------------------------------------------- small helpers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
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
