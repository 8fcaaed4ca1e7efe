"""Exact and near-duplicate detection for chest X-ray collections.

Public COVID-19 collections re-upload the same film under new names, re-encoded
or resized; when such copies land in different folds, the test set leaks. Exact
copies are found by a hash of the decoded pixels (so re-saving a PNG does not hide
them). Near copies need two tests, because chest films all look alike at low
resolution: a 64-bit perceptual hash (DCT "pHash" from ImageHash) within a small
Hamming distance proposes a pair, and the correlation of the two images' edge maps
(Sobel gradient magnitude at 64x64) confirms it.

Calibration on ../shared/data (Cohen + Kaggle, 1923 images): the known re-uploads
have pHash distance 0-4 and edge correlation >= 0.79; among distinct films with
pHash distance <= 10 the highest edge correlation is 0.74 (and 0.76 over all pairs).
"""

from __future__ import annotations

import hashlib

import imagehash
import numpy as np
from PIL import Image
from scipy import ndimage

#: pHash Hamming distance (of 64 bits) at or below which a pair is a near-duplicate candidate.
NEAR_DUPLICATE_DISTANCE = 10
#: Edge-map correlation at or above which a candidate pair is confirmed as the same film.
NEAR_DUPLICATE_CORRELATION = 0.78
_SIGNATURE_SIZE = 64


def pixel_hash(image: np.ndarray) -> str:
    """SHA-256 of a decoded image's shape and pixels: equal for byte-different encodings of identical pixels."""
    digest = hashlib.sha256(repr(image.shape).encode())
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def perceptual_hash(image: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a 2-D uint8 image, as an unsigned int."""
    bits = imagehash.phash(Image.fromarray(image)).hash.flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def edge_signature(image: np.ndarray) -> np.ndarray:
    """Unit-norm, zero-mean Sobel gradient magnitude of the image resized to 64x64 (float32, 4096 values).

    The dot product of two signatures is the Pearson correlation of the edge maps.
    """
    small = Image.fromarray(image).resize((_SIGNATURE_SIZE, _SIGNATURE_SIZE), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, dtype=np.float32)
    edges = np.hypot(ndimage.sobel(pixels, 0), ndimage.sobel(pixels, 1)).ravel()
    edges -= edges.mean()
    norm = float(np.linalg.norm(edges))
    return edges / norm if norm > 0 else edges


def hamming_distances(hashes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Hamming distances (uint8, len(hashes) x len(others)) between two arrays of 64-bit hashes."""
    a = np.asarray(hashes, dtype=np.uint64)[:, None]
    b = np.asarray(others, dtype=np.uint64)[None, :]
    return np.bitwise_count(a ^ b)


def near_duplicate_pairs(
    hashes,
    signatures,
    max_distance: int = NEAR_DUPLICATE_DISTANCE,
    min_correlation: float = NEAR_DUPLICATE_CORRELATION,
    block: int = 2048,
) -> list[tuple[int, int, int, float]]:
    """``(i, j, distance, correlation)`` for every pair ``i < j`` judged to be the same film.

    hashes: perceptual hashes (:func:`perceptual_hash`); signatures: matching rows of
    :func:`edge_signature`. A pair needs both ``distance <= max_distance`` and
    ``correlation >= min_correlation``. Memory stays at ``block x n`` bytes.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs = []
    for start in range(0, len(hashes), block):
        distances = hamming_distances(hashes[start : start + block], hashes)
        for row, b in zip(*np.nonzero(distances <= max_distance)):
            a = start + int(row)
            if b <= a:
                continue
            correlation = float(np.dot(signatures[a], signatures[b]))
            if correlation >= min_correlation:
                pairs.append((a, int(b), int(distances[row, b]), round(correlation, 4)))
    return sorted(pairs)


def cross_duplicate_pairs(
    hashes,
    signatures,
    other_hashes,
    other_signatures,
    max_distance: int = NEAR_DUPLICATE_DISTANCE,
    min_correlation: float = NEAR_DUPLICATE_CORRELATION,
) -> list[tuple[int, int, int, float]]:
    """Like :func:`near_duplicate_pairs`, between two collections: ``(i, j, ...)``, i in the first, j in the other."""
    distances = hamming_distances(hashes, other_hashes)
    pairs = []
    for a, b in zip(*np.nonzero(distances <= max_distance)):
        correlation = float(np.dot(signatures[a], other_signatures[b]))
        if correlation >= min_correlation:
            pairs.append((int(a), int(b), int(distances[a, b]), round(correlation, 4)))
    return pairs


def connected_groups(n: int, pairs) -> np.ndarray:
    """Label ``n`` items so that items joined (transitively) by ``pairs`` share a label (union-find)."""
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b, *_ in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(a) for a in range(n)])


def person_groups(patients, same_person=(), same_film=()) -> np.ndarray:
    """Group label per row: rows share a label when they are one person or one film, transitively.

    patients: the patient id of each row. same_person: ``(patient, patient)`` pairs known to be one
    person (e.g. the two patients of an exact duplicate film); chains merge fully (P = Q and
    Q = R put P, Q and R in one group). same_film: ``(row, row)`` pairs of near-duplicate films.
    """
    patients = list(patients)
    people = {p: k for k, p in enumerate(dict.fromkeys([*patients, *(q for pair in same_person for q in pair)]))}
    n = len(patients)
    links = [(k, n + people[p]) for k, p in enumerate(patients)]
    links += [(n + people[a], n + people[b]) for a, b in same_person]
    links += [(a, b) for a, b, *_ in same_film]
    groups = connected_groups(n + len(people), links)[:n]
    return np.unique(groups, return_inverse=True)[1]
