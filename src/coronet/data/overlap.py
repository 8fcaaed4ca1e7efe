"""Is this film one we have seen? The same film (re-encoded, resized) or a film of the same patient, across datasets.

A film's fingerprint is its 64-bit perceptual hash and its edge signature (:mod:`coronet.data.dedup`);
a pair is the same film when the hashes are within 10 bits and the edge maps correlate (>= 0.78), as
in duplicate removal. Used to find dataset-2's films that the 4-class models trained on
(``coronet finetune --data``) and an external dataset's training overlap (``coronet evaluate
--training-dataset``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..layout import MANIFEST, SIGNATURES
from .dedup import cross_duplicate_pairs, edge_signature
from .imageio import read_image
from .scan import scan_images

Fingerprints = tuple[pd.DataFrame, np.ndarray, np.ndarray]


def file_fingerprints(table: pd.DataFrame, workers: int = 2) -> Fingerprints:
    """``(readable rows, perceptual hashes, edge signatures)`` of the files in ``table``'s ``path`` column,
    decoded once (unreadable files are left out)."""
    scans = scan_images(list(table["path"]), 32, workers=workers)
    readable = [k for k, scan in enumerate(scans) if "error" not in scan]
    return (
        table.iloc[readable].reset_index(drop=True),
        np.array([scans[k]["phash"] for k in readable], dtype=np.uint64),
        np.stack([scans[k]["signature"] for k in readable]) if readable else np.zeros((0, 1), np.float32),
    )


def dataset_fingerprints(dataset_dir: str | os.PathLike) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """``(manifest, perceptual hashes, edge signatures)`` of a prepared dataset, rows in manifest order.

    Signatures come from the dataset's ``signatures.npy``; datasets prepared before it existed
    have them recomputed from the image files.
    """
    dataset_dir = Path(dataset_dir)
    manifest = pd.read_csv(dataset_dir / MANIFEST)
    hashes = np.array([int(h, 16) for h in manifest["phash"]], dtype=np.uint64)
    path = dataset_dir / SIGNATURES
    if path.is_file():
        signatures = np.load(path)[manifest["cache_index"].to_numpy()].astype(np.float32)
    else:
        signatures = np.stack([edge_signature(read_image(p)) for p in manifest["path"]])
    return manifest, hashes, signatures


OVERLAP_COLUMNS = [
    "path",
    "label",
    "reference_path",
    "reference_label",
    "reference_patient_id",
    "distance",
    "correlation",
]


def overlap_table(
    ours: tuple[pd.DataFrame, np.ndarray, np.ndarray], reference: tuple[pd.DataFrame, np.ndarray, np.ndarray]
) -> pd.DataFrame:
    """Pairs of the same film between two fingerprinted tables (``(table, hashes, signatures)``, as from
    :func:`dataset_fingerprints`), judged as in duplicate removal.

    One row per pair: ``path`` and ``label`` from ``ours``; ``reference_path``, ``reference_label``
    and ``reference_patient_id`` from ``reference``; ``distance`` (pHash bits) and ``correlation``
    (edge maps). The tables need ``path``, ``label`` and (reference) ``patient_id`` columns.
    """
    (table, hashes, signatures), (other, other_hashes, other_signatures) = ours, reference
    pairs = cross_duplicate_pairs(hashes, signatures, other_hashes, other_signatures)
    return pd.DataFrame(
        [
            {
                "path": table["path"].iloc[a],
                "label": table["label"].iloc[a],
                "reference_path": other["path"].iloc[b],
                "reference_label": other["label"].iloc[b],
                "reference_patient_id": other["patient_id"].iloc[b],
                "distance": d,
                "correlation": c,
            }
            for a, b, d, c in pairs
        ],
        columns=OVERLAP_COLUMNS,
    )


def cross_dataset_overlap(dataset_dir: str | os.PathLike, reference_dir: str | os.PathLike) -> pd.DataFrame:
    """Images of one prepared dataset that are the same film as an image of another (see :func:`overlap_table`)."""
    return overlap_table(dataset_fingerprints(dataset_dir), dataset_fingerprints(reference_dir))


__all__ = ["OVERLAP_COLUMNS", "cross_dataset_overlap", "dataset_fingerprints", "file_fingerprints", "overlap_table"]
