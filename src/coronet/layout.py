"""The on-disk contract: what a prepared dataset directory and a run directory hold, and the predictions table.

Every module finds its files through these names, so the layout is written down once::

    DATASET/manifest.csv             one row per image: path, label, source, patient_id, fold, cache_index, ...
    DATASET/images-<size>.npy        the decoded, resized uint8 films (row = cache_index), memory-mappable
    DATASET/signatures.npy           edge signatures (overlap checks against other datasets)
    DATASET/prepare.json, summary.md, duplicates.csv, skipped.csv

    RUN/config.json                  resolved settings, dataset hash, versions, machine
    RUN/manifest.csv                 the dataset with its folds (+ dataset-prepare.json, dataset-summary.md, ...)
    RUN/predictions.csv              path, patient_id, fold, label, prob_<class>..., pred, ...
    RUN/results.md                   accuracy per fold
    RUN/report/                      coronet report: report.md, report.html, summary.json, <table>.csv, <figure>.png
    RUN/audit/                       coronet audit: audit.json, audit.md, audit.html, predictions-<test>.csv, ...
    RUN/adult-test/predictions.csv   the adult-negative test (likewise source-test/, radiography-test/)
    RUN/leave-out/predictions.csv    the held-out collection's films (coronet cv --leave-out SOURCE)
    RUN/fold-K/metrics.csv, curves.png, predictions.csv, checkpoints/last.ckpt, model/
    MODEL/model.safetensors + MODEL/model.json   (coronet.models.modeldir)

    OUT/dataset/, OUT/4class/, OUT/3class/, OUT/binary/, OUT/dataset2/, OUT/final/   coronet reproduce: one
    dataset, a run per task, a final model, and the overview report (report.md, report.html, summary.json,
    <table>.csv, overview.png, timings.json) at the top

The typed paths :class:`DatasetDir`, :class:`RunDir` (its :class:`FoldDir`, :class:`ReportDir`, :class:`AuditDir`)
and :class:`ReproduceDir` are the API: code asks them for a file, and for the run-level decisions that depend
only on what is on disk (which folds are finished, whether a config may be resumed).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

MANIFEST = "manifest.csv"
CACHE_TEMPLATE = "images-{size}.npy"
SIGNATURES = "signatures.npy"
PREPARE_RECORD = "prepare.json"
CONFIG = "config.json"
PREDICTIONS = "predictions.csv"
RESULTS = "results.md"
METRICS = "metrics.csv"
CURVES = "curves.png"
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
RAW_PREDICTIONS = "val-outputs.csv"  # the last validation's probabilities, before they join the rows
LOGS = "logs"
MODEL_DIR = "model"
MODEL_CARD = "model.json"
MODEL_WEIGHTS = "model.safetensors"
ADULT_TEST = "adult-test"
#: The films of a collection the run left out (``leave_out``), each predicted by its fold's model.
LEAVE_OUT = "leave-out"
AUDIT = "audit"
REPORT = "report"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
SUMMARY = "summary.json"
AUDIT_JSON = "audit.json"
AUDIT_MD = "audit.md"
AUDIT_HTML = "audit.html"
TIMINGS = "timings.json"
FOLD_PREFIX = "fold-"
#: The dataset's records a run keeps a copy of, each as ``dataset-<name>``.
DATASET_RECORDS = (PREPARE_RECORD, "summary.md", "duplicates.csv")
#: The run directories ``coronet reproduce`` writes, by task.
REPRODUCE_DATASET = "dataset"
REPRODUCE_FINAL = "final"
#: A fine-tune on dataset-2 keeps a run of the films no 4-class model saw here (Table VI, right half).
NO_OVERLAP = "no-overlap"
PROB_PREFIX = "prob_"
#: The columns every predictions table has, before one ``prob_<class>`` per class.
PREDICTION_COLUMNS = ("path", "patient_id", "fold", "label")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffix) to write to, renamed onto ``path`` when the block ends:
    a reader never sees a half-written file. If the block raises, the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fold_dir(run: str | os.PathLike, fold: int) -> Path:
    """Fold ``fold``'s directory of a run."""
    return Path(run) / f"{FOLD_PREFIX}{fold}"


def fold_model(run: str | os.PathLike, fold: int) -> Path:
    """Fold ``fold``'s model directory of a run."""
    return fold_dir(run, fold) / MODEL_DIR


def prob_column(cls: str) -> str:
    """The predictions column holding the probability of class ``cls``."""
    return PROB_PREFIX + cls


def prob_columns(table: pd.DataFrame) -> list[str]:
    """The ``prob_<class>`` columns of a predictions table, in order."""
    return [c for c in table.columns if str(c).startswith(PROB_PREFIX)]


def classes_of(table: pd.DataFrame) -> list[str]:
    """The classes of a predictions table, from its ``prob_<class>`` columns, in order."""
    return [c[len(PROB_PREFIX) :] for c in prob_columns(table)]


class _Directory:
    """A directory of the on-disk contract: its ``path`` and properties naming the files it holds."""

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path))


class DatasetDir(_Directory):
    """A prepared dataset (``coronet data prepare``)."""

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    def cache(self, size: int) -> Path:
        return self.path / CACHE_TEMPLATE.format(size=size)

    @property
    def signatures(self) -> Path:
        return self.path / SIGNATURES

    @property
    def record(self) -> Path:
        return self.path / PREPARE_RECORD

    def exists(self) -> bool:
        return self.manifest.is_file()

    def read_manifest(self) -> pd.DataFrame:
        if not self.manifest.is_file():
            raise FileNotFoundError(f"{self.path}: not a prepared dataset (no {MANIFEST}; run `coronet data prepare`)")
        return pd.read_csv(self.manifest)

    def manifest_sha256(self) -> str:
        """The dataset's identity: the SHA-256 of its manifest (recorded in run configs and model cards)."""
        return file_sha256(self.manifest)

    def read_record(self) -> dict:
        """``prepare.json``: how the dataset was prepared."""
        return json.loads(self.record.read_text())


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FoldDir(_Directory):
    """One fold of a run (or the final model's directory): its training record, predictions and model."""

    @property
    def model(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def model_card(self) -> Path:
        return self.model / MODEL_CARD

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def curves(self) -> Path:
        return self.path / CURVES

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / LAST_CHECKPOINT

    @property
    def raw_predictions(self) -> Path:
        return self.path / RAW_PREDICTIONS

    @property
    def logs(self) -> Path:
        """Where an optional Lightning logger (CSV, TensorBoard) writes."""
        return self.path / LOGS

    def has_model(self) -> bool:
        """The fold's model directory is written (its card is written last)."""
        return self.model_card.is_file()

    def finished(self) -> bool:
        """The fold has its model and predictions (a resumed run keeps it)."""
        return self.has_model() and self.predictions.is_file()


class _PageDir(_Directory):
    """A directory whose results are one page, as Markdown and as HTML, and a JSON summary."""

    MARKDOWN, HTML, SUMMARY = REPORT_MD, REPORT_HTML, SUMMARY

    @property
    def markdown(self) -> Path:
        return self.path / self.MARKDOWN

    @property
    def html(self) -> Path:
        return self.path / self.HTML

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY


class ReportDir(_PageDir):
    """A report's files: ``report.md``, ``report.html``, ``summary.json``, tables (CSV) and figures (PNG)."""

    def table(self, name: str) -> Path:
        """``<name>.csv`` (``table3``, ``sources``, ...)."""
        return self.path / f"{name}.csv"

    def figure(self, name: str) -> Path:
        """``<name>.png`` (``roc``, ``overview``, ...)."""
        return self.path / f"{name}.png"


class AuditDir(_PageDir):
    """``coronet audit``'s files (:mod:`coronet.evaluation.audit`): ``audit.md``, ``audit.html``, ``audit.json``."""

    MARKDOWN, HTML, SUMMARY = AUDIT_MD, AUDIT_HTML, AUDIT_JSON

    def predictions(self, test: str) -> Path:
        """Test ``test``'s predictions (``predictions-<test>.csv``, the usual predictions layout)."""
        return self.path / f"predictions-{test}.csv"

    @property
    def gradcam_mass(self) -> Path:
        return self.path / "gradcam-mass.csv"

    @property
    def gradcam_examples(self) -> Path:
        return self.path / "gradcam-examples.png"

    @property
    def acquisition_features(self) -> Path:
        return self.path / "acquisition-features.csv"

    @property
    def occluded_dataset(self) -> DatasetDir:
        """The run's training films with the lungs removed (test 6 trains on it)."""
        return DatasetDir(self.path / "lungs-removed-dataset")

    def retrained(self, fold: int) -> FoldDir:
        """Fold ``fold`` of the model retrained on the lungs-removed films."""
        return FoldDir(fold_dir(self.path / "retrained", fold))

    def read_summary(self) -> dict | None:
        """The written ``audit.json``, or None before the audit has finished."""
        return json.loads(self.summary.read_text()) if self.summary.is_file() else None


class RunDir(_Directory):
    """A run: cross-validation, fine-tune, external evaluation."""

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST

    @property
    def predictions(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def report(self) -> ReportDir:
        return ReportDir(self.path / REPORT)

    @property
    def audit(self) -> AuditDir:
        return AuditDir(self.path / AUDIT)

    @property
    def adult_test(self) -> Path:
        return self.cohort_test(ADULT_TEST)

    def cohort_test(self, test_dir: str) -> Path:
        """The predictions of a cohort test (``<test_dir>/predictions.csv``, :mod:`coronet.evaluation.cohorttest`)."""
        return self.path / test_dir / PREDICTIONS

    @property
    def leave_out(self) -> Path:
        """The held-out collection's predictions (``leave-out/predictions.csv``), with ``leave_out`` set."""
        return self.path / LEAVE_OUT / PREDICTIONS

    @property
    def model_card(self) -> Path:
        """An evaluation's copy of the card of the model it ran."""
        return self.path / MODEL_CARD

    @property
    def overlap(self) -> Path:
        """Films of the run's data that another dataset (the 4-class one, a model's training data) also has."""
        return self.path / "overlap.csv"

    @property
    def skipped(self) -> Path:
        """Films an evaluation could not read."""
        return self.path / "skipped.csv"

    @property
    def source_run(self) -> Path:
        """A fine-tune's record of the run it started from (``source-run.json``)."""
        return self.path / "source-run.json"

    @property
    def own_dataset(self) -> DatasetDir:
        """A dataset the run prepared for itself (dataset-2 for a fine-tune on it)."""
        return DatasetDir(self.path / REPRODUCE_DATASET)

    @property
    def no_overlap(self) -> RunDir:
        """The run restricted to the films no source model saw (:data:`NO_OVERLAP`)."""
        return RunDir(self.path / NO_OVERLAP)

    def fold(self, k: int) -> FoldDir:
        return FoldDir(fold_dir(self.path, k))

    def folds(self) -> list[FoldDir]:
        """The fold directories present, by fold number."""
        found = []
        for path in self.path.glob(f"{FOLD_PREFIX}*"):
            number = path.name[len(FOLD_PREFIX) :]
            if path.is_dir() and number.isdigit():
                found.append((int(number), FoldDir(path)))
        return [fold for _, fold in sorted(found, key=lambda item: item[0])]

    def finished_folds(self, folds: Iterable[int]) -> set[int]:
        """Those of ``folds`` that are finished (:meth:`FoldDir.finished`): a resumed run keeps them."""
        return {k for k in folds if self.fold(k).finished()}

    def folds_without_model(self, folds: Iterable[int]) -> list[int]:
        """Those of ``folds`` that have no trained model yet."""
        return [k for k in folds if not self.fold(k).has_model()]

    def exists(self) -> bool:
        return self.config.is_file()

    def read_config(self) -> dict:
        if not self.config.is_file():
            raise FileNotFoundError(f"{self.path}: not a run directory (no {CONFIG}; run `coronet cv` first)")
        return json.loads(self.config.read_text())

    def write_config(self, record: dict, runtime_fields: Iterable[str] = ()) -> dict:
        """Write ``config.json``; return the record as written (JSON types: tuples become lists).

        Resuming (a config is there) is allowed with the same recipe and data: every ``train`` setting but
        ``runtime_fields`` (how it runs: devices, precision ...) and the ``dataset`` entry must match, else a
        ``ValueError`` says what differs. The earlier sittings' runtime settings are kept in ``runtime_history``.
        """
        runtime_fields = tuple(runtime_fields)
        record = json.loads(json.dumps(record))
        if self.config.is_file():
            previous = json.loads(self.config.read_text())
            recipe = _recipe(record, runtime_fields)
            old = _recipe(previous, runtime_fields)
            changed = sorted(k for k in set(recipe) | set(old) if recipe.get(k) != old.get(k))
            if changed or previous.get("dataset") != record.get("dataset"):
                what = f"other settings ({', '.join(changed)})" if changed else "other data"
                raise ValueError(f"{self.path}: holds a run with {what}; use a new --out")
            record["runtime_history"] = [
                *previous.get("runtime_history", []),
                runtime_of(previous, runtime_fields),
            ]
        self.path.mkdir(parents=True, exist_ok=True)
        self.config.write_text(json.dumps(record, indent=2) + "\n")
        return record

    @property
    def dataset(self) -> DatasetDir:
        """The prepared dataset the run was trained on, as its config records it."""
        return DatasetDir(Path(self.read_config()["dataset"]["path"]))

    def read_manifest(self) -> pd.DataFrame:
        """The run's rows with their folds (``manifest.csv``)."""
        if not self.manifest.is_file():
            raise FileNotFoundError(f"{self.path}: not a run directory (no {MANIFEST}; run `coronet cv` first)")
        return pd.read_csv(self.manifest)

    def write_manifest(self, manifest: pd.DataFrame) -> None:
        manifest.to_csv(self.manifest, index=False)

    def keep_dataset_records(self, dataset: DatasetDir) -> None:
        """Copy the dataset's records (:data:`DATASET_RECORDS`) into the run, each as ``dataset-<name>``."""
        for name in DATASET_RECORDS:
            if (dataset.path / name).is_file():
                shutil.copy2(dataset.path / name, self.path / f"dataset-{name}")

    def read_predictions(self) -> pd.DataFrame:
        """The run's ``predictions.csv``, checked (:func:`read_predictions`)."""
        return read_predictions(self.predictions)

    def write_results(self, predictions: pd.DataFrame, results: str) -> None:
        """The combined ``predictions.csv`` and the per-fold ``results.md``."""
        predictions.to_csv(self.predictions, index=False)
        self.results.write_text(results)


def _recipe(record: dict, runtime_fields: tuple[str, ...]) -> dict:
    return {k: v for k, v in (record.get("train") or {}).items() if k not in runtime_fields}


def runtime_of(record: dict, runtime_fields: Iterable[str]) -> dict:
    """How a recorded run was carried out: its runtime settings, precision and machine."""
    train = record.get("train") or {}
    return {
        **{k: train.get(k) for k in runtime_fields},
        "precision_resolved": record.get("precision_resolved"),
        "machine": record.get("machine"),
    }


class ReproduceDir(_Directory):
    """``coronet reproduce``'s directory: the dataset, a run per task, the final model, the overview report."""

    @property
    def dataset(self) -> DatasetDir:
        return DatasetDir(self.path / REPRODUCE_DATASET)

    def run(self, name: str) -> RunDir:
        """The run of task ``name`` (``4class``, ``3class``, ``binary``, ``dataset2``)."""
        return RunDir(self.path / name)

    @property
    def final(self) -> FoldDir:
        """The model trained on every image (``final=True``)."""
        return FoldDir(self.path / REPRODUCE_FINAL)

    @property
    def timings(self) -> Path:
        return self.path / TIMINGS

    @property
    def report(self) -> ReportDir:
        """The overview report, written at the top of the directory."""
        return ReportDir(self.path)


#: Columns a predictions table carries over from its rows where they have them.
CARRIED_COLUMNS = ("source", "relpath", "source_label", "cohort", "overlap", "overlap_kind")


def predictions_table(rows: pd.DataFrame, probabilities, classes, fold=None) -> pd.DataFrame:
    """The predictions table every writer writes: ``path, patient_id, fold, label``, one ``prob_<class>`` per class
    (rounded to 6 decimals), ``pred`` (the most probable class), then :data:`CARRIED_COLUMNS` found in ``rows``.

    rows: the films, in the order of ``probabilities`` ((N, len(classes)) array); fold: every row's fold
    (default: the rows' own ``fold`` column).
    """
    import numpy as np

    rows = rows.reset_index(drop=True)
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.shape != (len(rows), len(classes)):
        raise ValueError(f"{probabilities.shape} probabilities for {len(rows)} films and {len(classes)} classes")
    table = rows[["path", "patient_id"]].copy()
    table["fold"] = rows["fold"] if fold is None else fold
    table["label"] = rows["label"]
    for k, cls in enumerate(classes):
        table[prob_column(cls)] = probabilities[:, k].round(6)
    table["pred"] = [classes[k] for k in probabilities.argmax(axis=1)] if len(rows) else []
    for column in CARRIED_COLUMNS:
        if column in rows:
            table[column] = rows[column].to_numpy()
    return table


def read_predictions(path: str | os.PathLike) -> pd.DataFrame:
    """A ``predictions.csv`` checked for the documented columns (``path, patient_id, fold, label``, one
    ``prob_<class>`` per class); ``pred`` is derived from the probabilities when absent.

    A missing column is a one-line ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no predictions file (run `coronet cv` or `coronet evaluate` first)")
    try:
        table = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a readable CSV ({' '.join(str(error).split())[:120]})") from None
    missing = [c for c in PREDICTION_COLUMNS if c not in table]
    probabilities = prob_columns(table)
    if missing or not probabilities:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing + ([] if probabilities else ['prob_<class>']))}"
            f" (expected {', '.join(PREDICTION_COLUMNS)}, prob_<class>...)"
        )
    if "pred" not in table:
        table["pred"] = [c[len(PROB_PREFIX) :] for c in table[probabilities].idxmax(axis=1)]
    return table


__all__ = [
    "ADULT_TEST",
    "AUDIT",
    "AUDIT_HTML",
    "AUDIT_JSON",
    "AUDIT_MD",
    "AuditDir",
    "DATASET_RECORDS",
    "FOLD_PREFIX",
    "LEAVE_OUT",
    "REPORT_HTML",
    "REPORT_MD",
    "ReportDir",
    "ReproduceDir",
    "SUMMARY",
    "TIMINGS",
    "file_sha256",
    "runtime_of",
    "CACHE_TEMPLATE",
    "CHECKPOINTS",
    "CONFIG",
    "CURVES",
    "DatasetDir",
    "FoldDir",
    "LAST_CHECKPOINT",
    "MANIFEST",
    "METRICS",
    "MODEL_CARD",
    "MODEL_DIR",
    "MODEL_WEIGHTS",
    "NO_OVERLAP",
    "PREDICTIONS",
    "PREDICTION_COLUMNS",
    "PREPARE_RECORD",
    "PROB_PREFIX",
    "REPORT",
    "RESULTS",
    "RunDir",
    "SIGNATURES",
    "atomic_path",
    "classes_of",
    "fold_dir",
    "fold_model",
    "prob_column",
    "prob_columns",
    "predictions_table",
    "read_predictions",
]
