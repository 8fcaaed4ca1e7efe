"""Every film decoded once: its file and pixel hashes, perceptual hash, edge signature and the resized image for
the cache; and the fingerprints (perceptual hash, edge signature) the duplicate tests compare."""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from .dedup import edge_signature, perceptual_hash, pixel_hash
from .imageio import ImageReadError, read_image, resize_square

logger = logging.getLogger(__name__)

#: Films as the duplicate tests see them: ``(rows with path, label and patient_id, 64-bit perceptual hashes,
#: edge signatures)``, row for row (as :mod:`coronet.data.overlap` reads them from a prepared dataset).
Fingerprints = tuple[pd.DataFrame, np.ndarray, np.ndarray]


def _scan_one(args: tuple[str, int]) -> dict:
    """Decode one file and compute everything preparation needs from it (runs in a worker)."""
    path, size = args
    try:
        data = Path(path).read_bytes()
        image = read_image(data, name=path)
    except ImageReadError as error:
        return {"error": error.problem}
    except OSError as error:
        return {"error": f"cannot read file ({error.strerror or error})"}
    resized = resize_square(image, size)
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "pixel_hash": pixel_hash(image),
        "phash": perceptual_hash(image),
        "signature": edge_signature(image),
        "height": image.shape[0],
        "width": image.shape[1],
        "cached": resized,
    }


def scan_images(paths: list[str], size: int, workers: int) -> list[dict]:
    """:func:`_scan_one` over ``paths``, in order, in ``workers`` processes."""
    jobs = [(p, size) for p in paths]
    if workers <= 1 or len(jobs) < 64:
        return [_scan_one(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_scan_one, jobs, chunksize=32))


def scan_table(table: pd.DataFrame, size: int, workers: int) -> tuple[pd.DataFrame, list[dict], pd.DataFrame]:
    """Decode every film of ``table`` once (:func:`scan_images`, images resized to ``size``): ``(readable rows, their
    scans, skipped)``.

    The readable rows gain ``sha256``, ``pixel_hash``, ``height``, ``width`` and ``phash`` (hex); each
    unreadable file is logged in one line and listed in ``skipped`` (``path, problem``).
    """
    scans = scan_images(list(table["path"]), size, workers)
    skipped = pd.DataFrame(
        [{"path": p, "problem": s["error"]} for p, s in zip(table["path"], scans) if "error" in s],
        columns=["path", "problem"],
    )
    for row in skipped.itertuples():
        logger.info(f"skipped {row.path}: {row.problem}")
    readable = [k for k, s in enumerate(scans) if "error" not in s]
    table, scans = table.iloc[readable].reset_index(drop=True), [scans[k] for k in readable]
    for key in ("sha256", "pixel_hash", "height", "width"):
        table[key] = [s[key] for s in scans]
    table["phash"] = [f"{s['phash']:016x}" for s in scans]
    return table, scans, skipped


def fingerprints(table: pd.DataFrame, scans: list[dict]) -> Fingerprints:
    """The duplicate tests' view of scanned films (:data:`Fingerprints`), row for row."""
    signatures = np.stack([s["signature"] for s in scans]) if scans else np.zeros((0, 1), np.float32)
    return table.reset_index(drop=True), np.array([s["phash"] for s in scans], dtype=np.uint64), signatures


def join_fingerprints(first: Fingerprints, second: Fingerprints) -> Fingerprints:
    """The films of ``first`` followed by those of ``second``."""
    if not len(second[0]):
        return first
    table = pd.concat([first[0], second[0]], ignore_index=True)
    return table, np.concatenate([first[1], second[1]]), np.concatenate([first[2], second[2]])
