"""``fetch_sources``: each source skipped when installed, else downloaded and installed; the help texts."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..sources import SOURCES, SourceSpec
from .download import download_archive
from .errors import FetchError
from .install import install_archive

# The logger of the module the fetch was before it was a package: one for all its steps.
logger = logging.getLogger("coronet.data.fetch")


#: Environment variable naming a mirror: each source is fetched from ``<base>/<name>.zip``.
BASE_URL_ENV = "CORONET_FETCH_BASE_URL"
#: Folder under the data directory holding archives, partial downloads and their records.
DOWNLOADS = ".downloads"


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
    archive = download_archive(source, url, data_dir / DOWNLOADS, force=force, timeout=timeout)
    install_archive(source, archive, target)
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
