"""A downloaded archive installed: the members the readers need, checked, extracted, renamed into place.

Every member name is checked (no zip-slip); extraction goes beside the target and is renamed into place, so a
failed run never leaves a half-installed source."""

from __future__ import annotations

import logging
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ..sources import SourceSpec
from .download import CHUNK
from .errors import FetchError

# The logger of the module the fetch was before it was a package: one for all its steps.
logger = logging.getLogger("coronet.data.fetch")

# Finder litter in archives made on macOS; never wanted, and ``__MACOSX/chest_xray``
# would otherwise compete with the real ``chest_xray`` folder.
_JUNK_DIRS = {"__MACOSX"}
_JUNK_FILES = {".DS_Store", "Thumbs.db"}


def install_archive(source: SourceSpec, archive: Path, target: Path) -> None:
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
                        shutil.copyfileobj(src, dst, CHUNK)
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
