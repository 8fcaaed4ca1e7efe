"""``coronet data prepare``: the paper's dataset (Table I), reproducibly and without leakage.

Steps, in order:

1. read the chosen sources into one table (:mod:`coronet.data.sources`);
2. decode every candidate once (2 processes): file SHA-256, pixel hash, perceptual
   hash, edge signature and the resized uint8 image for the cache; unreadable files
   are listed and skipped;
3. drop exact duplicates (same decoded pixels), keeping the first by source and path,
   and remember that both copies' patients are one person;
4. randomly under-sample each class to its target count (seeded);
5. find near-duplicates among the selection and group images that must share a fold
   (same patient, or the same film re-uploaded);
6. assign stratified (grouped) folds and write the dataset directory.

Extra cohorts (:mod:`coronet.data.cohorts`) follow, each through the same decoding, duplicate removal and
grouping, with folds of their own; a cohort's film that is the same film (exact or near) as any film
already scanned -- every Table I candidate, selected or not, and the earlier cohorts' films -- is dropped
and listed in ``duplicates.csv`` (kind ``other-source``), so no film enters twice or crosses folds.

The dataset directory holds ``manifest.csv``, ``images-<size>.npy`` (uint8,
N x size x size, memory-mappable, row ``cache_index``), ``duplicates.csv``,
``skipped.csv``, ``prepare.json`` (resolved config and counts), ``summary.md`` and
``signatures.npy`` (edge signatures, for :mod:`coronet.data.overlap` with another dataset).

Decoding is :mod:`coronet.data.scan`'s; the image cache's reading and writing is :mod:`coronet.data.cache`'s
(``cache_size``, ``load_cache`` and ``write_cache`` are importable from here too).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .. import __version__, paper
from ..layout import CACHE_TEMPLATE, MANIFEST, PREPARE_RECORD, SIGNATURES, DatasetDir
from .cache import cache_size, load_cache, write_cache
from .cohorts import TABLE1, Cohort, cohort_column, get_cohort
from .dedup import connected_groups, cross_duplicate_pairs, near_duplicate_pairs, person_groups
from .scan import Fingerprints, fingerprints, join_fingerprints, scan_table
from .sources import LABELS, read_source, reader_options, source_dir

logger = logging.getLogger(__name__)

#: The paper's Table I (coronet.paper), the default selection.
PAPER_CLASS_COUNTS = dict(paper.TABLE1)
#: duplicates.csv's kind for a film dropped because another source's film already in the dataset is the same film.
OTHER_SOURCE = "other-source"


@dataclass
class PrepareConfig:
    """Everything that decides which images end up in which fold."""

    sources: tuple[str, ...] = ("cohen", "kaggle")
    class_counts: dict[str, int | None] = field(default_factory=lambda: dict(PAPER_CLASS_COUNTS))
    folds: int = 4
    split: str = "patient"  # "patient": stratified + grouped by patient; "image": the paper's stratified folds
    seed: int = 0
    image_size: int = 150
    source_options: dict[str, dict] = field(default_factory=dict)  # per source: reader options over its spec's
    source_roots: dict[str, str] = field(default_factory=dict)  # a source's folder, if not under data_dir
    workers: int = min(2, os.cpu_count() or 1)
    # De-confounding: extra cohorts (coronet.data.cohorts), each cohort's folder (or a data directory holding
    # it), added as rows with patient-grouped folds of their own; cohort_per_class draws that many films of
    # each of a cohort's labels (all: absent or None).
    cohorts: dict[str, str] = field(default_factory=dict)
    cohort_per_class: dict[str, int | None] = field(default_factory=dict)

    def __post_init__(self):
        if self.split not in ("patient", "image"):
            raise ValueError(f"split must be 'patient' or 'image', not {self.split!r}")
        if self.folds < 2:
            raise ValueError("folds must be at least 2")
        for name in [*self.cohorts, *self.cohort_per_class]:
            get_cohort(name)  # an unknown cohort is an error here, not a silent no-op


@dataclass
class PreparedDataset:
    manifest: pd.DataFrame
    duplicates: pd.DataFrame
    skipped: pd.DataFrame
    summary: str
    out: Path


def collect_candidates(data_dir: Path, config: PrepareConfig) -> pd.DataFrame:
    """All images of the configured sources, with ``relpath`` relative to ``data_dir``."""
    tables = []
    for name in config.sources:
        options = reader_options(name, data_dir, config.source_options.get(name), config.source_roots)
        root = config.source_roots.get(name) or source_dir(name, data_dir)
        tables.append(read_source(name, root, **options))
    table = pd.concat(tables, ignore_index=True)
    table["path"] = [str(Path(p).resolve()) for p in table["path"]]
    root = data_dir.resolve()
    table["relpath"] = [os.path.relpath(p, root) for p in table["path"]]
    return table.sort_values(["source", "relpath"], kind="stable").reset_index(drop=True)


def undersample(table: pd.DataFrame, class_counts: Mapping[str, int | None], seed: int) -> pd.DataFrame:
    """Seeded random selection of ``class_counts[label]`` images per label.

    A count of ``None`` takes every image of the label; a count above what is available
    takes all of them, with a warning.

    The draw depends only on the seed and the sorted ``relpath`` of each class, not on
    where the data directory is or the order files were listed.
    """
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted(class_counts):
        rows = table[table["label"] == label].sort_values("relpath", kind="stable")
        wanted = class_counts[label]
        if wanted is None:
            chosen.append(rows)
        elif len(rows) < wanted:
            warnings.warn(
                f"class {label!r}: only {len(rows)} images available, {wanted} requested; taking all", stacklevel=2
            )
            chosen.append(rows)
        else:
            chosen.append(rows.iloc[np.sort(rng.choice(len(rows), size=wanted, replace=False))])
    return pd.concat(chosen).sort_values(["source", "relpath"], kind="stable").reset_index(drop=True)


def exact_duplicates(table: pd.DataFrame, pixel_hashes: list) -> tuple[list[int], list[tuple], list[dict]]:
    """Rows with the same decoded pixels as an earlier row: ``(rows to keep, (patient, patient) pairs that are
    one person, duplicates.csv rows)``. The first copy of each film is kept."""
    seen: dict = {}
    first = [seen.setdefault(h, k) for k, h in enumerate(pixel_hashes)]
    dropped = [k for k in range(len(first)) if first[k] != k]
    paths, patients = list(table["path"]), list(table["patient_id"])
    same_person = [(patients[k], patients[first[k]]) for k in dropped]
    rows = [
        {
            "kind": "exact",
            "path": paths[first[k]],
            "other_path": paths[k],
            "distance": 0,
            "correlation": 1.0,
            "kept": "path",
        }
        for k in dropped
    ]
    return [k for k in range(len(first)) if first[k] == k], same_person, rows


def near_duplicates(paths: pd.Series, scans: list[dict]) -> tuple[list, list[dict]]:
    """Near-duplicate pairs among scanned films, ``(a, b, distance, correlation)``, and their duplicates.csv rows."""
    paths = list(paths)
    pairs = near_duplicate_pairs(
        np.array([s["phash"] for s in scans], dtype=np.uint64), np.stack([s["signature"] for s in scans])
    )
    rows = [
        {"kind": "near", "path": paths[a], "other_path": paths[b], "distance": d, "correlation": c, "kept": "both"}
        for a, b, d, c in pairs
    ]
    return pairs, rows


def assign_folds(labels, groups, folds: int, seed: int) -> np.ndarray:
    """Fold number (1..folds) per image: stratified by label, no group in two folds."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    fold = np.zeros(len(labels), dtype=int)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups), start=1):
        fold[test] = k
    return fold


@dataclass
class Selection:
    """Films chosen for the dataset so far, row for row with their scans, and what choosing them found."""

    rows: pd.DataFrame  #: manifest rows with ``group`` and ``fold``
    scans: list[dict]  #: :func:`coronet.data.scan.scan_table`'s, row for row
    duplicate_rows: list[dict]  #: duplicates.csv rows
    skipped: pd.DataFrame  #: skipped.csv rows: unreadable files


def prepare_dataset(
    data_dir: str | os.PathLike, out: str | os.PathLike, config: PrepareConfig | None = None
) -> PreparedDataset:
    """Run all preparation steps (see the module docstring) and write the dataset directory ``out``."""
    config = config or PrepareConfig()
    started = time.perf_counter()
    data_dir, out = Path(data_dir), Path(out)
    candidates, selection, scanned = select_table1(data_dir, config)
    table1_kinds = Counter(row["kind"] for row in selection.duplicate_rows)  # prepare.json counts Table I's alone
    if config.cohorts:
        selection = _with_cohorts(selection, data_dir, config, scanned)
    manifest, duplicates = _write_dataset(out, selection, config.image_size)
    summary = summarize(candidates, manifest, duplicates, selection.skipped, config)
    (out / "summary.md").write_text(summary)
    elapsed = time.perf_counter() - started
    record = {
        "config": asdict(config),
        "data_dir": str(data_dir.resolve()),
        "counts": {k: int(v) for k, v in manifest.label.value_counts().items()},
        "images": len(manifest),
        "patients": int(manifest.patient_id.nunique()),
        "exact_duplicates_removed": table1_kinds["exact"],
        "near_duplicate_pairs": table1_kinds["near"],
        "other_source_duplicates_dropped": int(duplicates.other_path[duplicates.kind == OTHER_SOURCE].nunique()),
        "duplicates_by_kind": {str(k): int(v) for k, v in duplicates.kind.value_counts().items()},  # extra cohorts too
        "skipped": len(selection.skipped),
        "seconds": round(elapsed, 2),
        "manifest_sha256": DatasetDir(out).manifest_sha256(),
        "coronet": __version__,
        "python": platform.python_version(),
    }
    (out / PREPARE_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    logger.info(summary)
    logger.info(f"prepared {len(manifest)} images in {elapsed:.1f} s -> {out}")
    return PreparedDataset(manifest, duplicates, selection.skipped, summary, out)


def select_table1(data_dir: Path, config: PrepareConfig) -> tuple[pd.DataFrame, Selection, Fingerprints]:
    """Steps 1 to 6 of the module docstring for the configured sources, up to the folds: ``(every candidate, the
    selection, the fingerprints of every readable candidate)``; copies included, they are what extra cohorts must
    not repeat."""
    candidates = collect_candidates(data_dir, config)
    candidates = candidates[candidates["label"].isin(config.class_counts)].reset_index(drop=True)
    logger.info(f"scanning {len(candidates)} candidate images from {', '.join(config.sources)} ...")
    table, scans, skipped = scan_table(candidates, config.image_size, config.workers)
    table["_scan"] = range(len(table))
    scanned = fingerprints(table, scans)

    # Exact duplicates: keep the first copy; its patient and the dropped copy's are one person.
    keep, same_person, duplicate_rows = exact_duplicates(table, list(table["pixel_hash"]))
    table = table.iloc[keep].reset_index(drop=True)

    selected = undersample(table, config.class_counts, config.seed)
    selected_scans = [scans[k] for k in selected["_scan"].to_numpy()]
    pairs, near_rows = near_duplicates(selected["path"], selected_scans)

    # Fold groups: near-duplicate films always; for split=patient also patients, merged through every chain of
    # exact copies (the copies' patients are one person).
    if config.split == "patient":
        selected["group"] = person_groups(selected["patient_id"], same_person, pairs)
    else:
        selected["group"] = connected_groups(len(selected), pairs)
    selected["fold"] = assign_folds(selected["label"], selected["group"], config.folds, config.seed)
    selected = selected.drop(columns=["_scan", "pixel_hash"])
    return candidates, Selection(selected, selected_scans, duplicate_rows + near_rows, skipped), scanned


def _write_dataset(out: Path, selection: Selection, image_size: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The dataset directory's image cache, ``signatures.npy``, ``manifest.csv``, ``duplicates.csv`` (with each
    film's fold) and ``skipped.csv``: ``(manifest, duplicates)``."""
    manifest = selection.rows.assign(cache_index=np.arange(len(selection.rows)))
    out.mkdir(parents=True, exist_ok=True)
    write_cache(out / CACHE_TEMPLATE.format(size=image_size), [scan["cached"] for scan in selection.scans])
    # kept for overlap checks against other datasets (coronet finetune --data): 8 KiB per image
    np.save(out / SIGNATURES, np.stack([scan["signature"] for scan in selection.scans]).astype(np.float16))
    manifest.to_csv(out / MANIFEST, index=False)
    duplicates = pd.DataFrame(
        selection.duplicate_rows, columns=["kind", "path", "other_path", "distance", "correlation", "kept"]
    )
    fold_of = dict(zip(manifest.path, manifest.fold))
    duplicates["fold"] = duplicates.path.map(fold_of).astype("Int64")
    duplicates["other_fold"] = duplicates.other_path.map(fold_of).astype("Int64")
    duplicates.to_csv(out / "duplicates.csv", index=False)
    selection.skipped.to_csv(out / "skipped.csv", index=False)
    return manifest, duplicates


def _with_cohorts(selection: Selection, data_dir: Path, config: PrepareConfig, scanned: Fingerprints) -> Selection:
    """Table I's rows (cohort ``table1``) followed by each extra cohort's of ``config.cohorts``, with fold groups
    of their own. Each cohort is checked against ``scanned`` (the Table I candidates) and the cohorts added before
    it."""
    selected = selection.rows.assign(cohort=TABLE1)
    scans, duplicate_rows, skipped = list(selection.scans), list(selection.duplicate_rows), [selection.skipped]
    for name, folder in config.cohorts.items():
        rows, cohort_scans, cohort_duplicates, cohort_skipped = cohort_rows(
            get_cohort(name), Path(folder), data_dir, config, seen=scanned
        )
        rows["group"] += int(selected["group"].max()) + 1
        selected = pd.concat([selected, rows], ignore_index=True)
        scans += cohort_scans
        scanned = join_fingerprints(scanned, fingerprints(rows, cohort_scans))
        duplicate_rows += cohort_duplicates
        skipped.append(cohort_skipped)
    return Selection(selected, scans, duplicate_rows, pd.concat(skipped, ignore_index=True))


def cohort_rows(cohort: Cohort, folder: Path, data_dir: Path, config: PrepareConfig, seen: Fingerprints | None = None):
    """An extra cohort's films as manifest rows: ``(rows, scans, duplicate rows, skipped)``.

    ``folder`` is the cohort's source folder or a data directory holding it. Labels go through the
    cohort's label map (labels it does not map are not taken; the source's own is kept in
    ``source_label``); ``config.cohort_per_class`` may sample each label (before decoding: duplicates
    among the drawn films are then dropped, so a label may end with fewer). Unreadable files are
    skipped, exact copies dropped (their patients merged), films that are the same film as one of
    ``seen`` (another source's, already in the dataset) dropped, near-duplicates and patients grouped,
    and the rows get stratified, grouped folds of their own (``config.folds``, ``config.seed``).
    """
    from .sources import find_source_root

    root = find_source_root(cohort.source, folder, cohort.markers)
    table = read_source(cohort.source, root)
    table = table[table["label"].isin(cohort.label_map)].copy()
    table["source_label"] = table["label"]
    table["label"] = table["label"].map(cohort.label_map)
    table["path"] = [str(Path(p).resolve()) for p in table["path"]]
    table["relpath"] = [os.path.relpath(p, data_dir.resolve()) for p in table["path"]]
    table = table.sort_values("relpath", kind="stable").reset_index(drop=True)
    per_class = config.cohort_per_class.get(cohort.name)
    if per_class is not None:
        table = undersample(table, dict.fromkeys(dict.fromkeys(table["label"]), per_class), config.seed)
    logger.info(f"scanning {len(table)} films of cohort {cohort.name!r} ({cohort.title}) ...")
    table, scans, skipped = scan_table(table, config.image_size, config.workers)
    keep, same_person, duplicates = exact_duplicates(table, list(table["pixel_hash"]))
    table, scans = table.iloc[keep].drop(columns=["pixel_hash"]).reset_index(drop=True), [scans[k] for k in keep]
    if seen is not None:
        table, scans, crossed = drop_seen(table, scans, seen)
        duplicates += crossed
        if crossed:
            logger.info(
                f"cohort {cohort.name!r}: {len({row['other_path'] for row in crossed})} films dropped, each the same "
                f"film as one of another source already in the dataset (duplicates.csv, kind {OTHER_SOURCE!r})"
            )
    pairs, near_rows = near_duplicates(table["path"], scans)
    duplicates += near_rows
    table["group"] = person_groups(table["patient_id"], same_person, pairs)
    table["fold"] = assign_folds(table["label"], table["group"], config.folds, config.seed)
    table["cohort"] = cohort.name
    return table, scans, duplicates, skipped


def drop_seen(table: pd.DataFrame, scans: list[dict], seen: Fingerprints) -> tuple[pd.DataFrame, list[dict], list]:
    """``table``'s films without those that are the same film (exact or near, as in duplicate removal) as one of
    ``seen``: ``(kept rows, their scans, duplicates.csv rows of the dropped)``; ``path`` is the film kept (the seen
    one), ``other_path`` the dropped one."""
    if not len(table) or not len(seen[0]):
        return table, scans, []
    ours = fingerprints(table, scans)
    pairs = cross_duplicate_pairs(ours[1], ours[2], seen[1], seen[2])
    rows = [
        {
            "kind": OTHER_SOURCE,
            "path": seen[0]["path"].iloc[b],
            "other_path": table["path"].iloc[a],
            "distance": d,
            "correlation": c,
            "kept": "path",
        }
        for a, b, d, c in sorted(pairs)
    ]
    dropped = {a for a, *_ in pairs}
    keep = [k for k in range(len(table)) if k not in dropped]
    return table.iloc[keep].reset_index(drop=True), [scans[k] for k in keep], rows


def summarize(
    candidates: pd.DataFrame,
    manifest: pd.DataFrame,
    duplicates: pd.DataFrame,
    skipped: pd.DataFrame,
    config: PrepareConfig,
) -> str:
    """Markdown: a Table-I style table (images and patients per class and source) and fold make-up."""
    lines = [
        f"# Dataset (seed {config.seed}, {config.folds} folds, split by {config.split})",
        "",
        "| class | source | available | selected | paper (Table I) | patients |"
        + "".join(f" fold {k} |" for k in range(1, config.folds + 1)),
        "|---|---|---|---|---|---|" + "---|" * config.folds,
    ]
    # the paper's Table I counts apply to its own selection only (Cohen + Kaggle), not to dataset-2
    paper_applies = set(config.sources) == {"cohen", "kaggle"}
    order = {label: k for k, label in enumerate(LABELS)}
    ordered = manifest.sort_values("label", key=lambda labels: labels.map(order), kind="stable")
    ordered = ordered.assign(cohort=cohort_column(ordered))
    # Table I rows first, then each extra cohort in the order it was added
    cohorts = {name: k for k, name in enumerate([TABLE1, *config.cohorts])}
    ordered = ordered.sort_values("cohort", key=lambda c: c.map(cohorts), kind="stable")
    for (cohort, label, source), rows in ordered.groupby(["cohort", "label", "source"], sort=False):
        extra = cohort != TABLE1
        available = "-" if extra else int(((candidates.label == label) & (candidates.source == source)).sum())
        folds = rows.fold.value_counts()
        in_paper = "-" if extra or not paper_applies else paper.TABLE1.get(label, "-")
        lines.append(
            f"| {label}{f' ({cohort})' if extra else ''} | {source} | {available} | {len(rows)} | {in_paper} | "
            f"{rows.patient_id.nunique()} |" + "".join(f" {folds.get(k, 0)} |" for k in range(1, config.folds + 1))
        )
    folds = manifest.fold.value_counts()
    lines.append(
        f"| **all** | | {len(candidates)} | {len(manifest)} | {paper.table1_total() if paper_applies else '-'} | "
        f"{manifest.patient_id.nunique()} |" + "".join(f" {folds.get(k, 0)} |" for k in range(1, config.folds + 1))
    )
    exact, near = duplicates[duplicates.kind == "exact"], duplicates[duplicates.kind == "near"]
    crossed = duplicates[duplicates.kind == OTHER_SOURCE]
    lines += [
        "",
        f"- exact duplicates removed (same pixels): {len(exact)}",
        f"- near-duplicate pairs kept in one fold: {len(near)}"
        + (f" ({int((near.fold != near.other_fold).sum())} split across folds)" if len(near) else ""),
        f"- extra cohorts' films dropped as the same film as another source's: {crossed.other_path.nunique()}",
        f"- unreadable files skipped: {len(skipped)}",
    ]
    for row in skipped.itertuples():
        lines.append(f"  - {row.path}: {row.problem}")
    if config.split == "patient":
        leaked = manifest.groupby("patient_id").fold.nunique().gt(1).sum()
        lines.append(f"- patients in more than one fold: {leaked}")
    return "\n".join(lines) + "\n"


__all__ = [
    "OTHER_SOURCE",
    "PAPER_CLASS_COUNTS",
    "PrepareConfig",
    "PreparedDataset",
    "Selection",
    "assign_folds",
    "cache_size",
    "cohort_rows",
    "collect_candidates",
    "drop_seen",
    "exact_duplicates",
    "load_cache",
    "near_duplicates",
    "prepare_dataset",
    "select_table1",
    "summarize",
    "undersample",
    "write_cache",
]
