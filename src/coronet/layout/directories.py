"""The typed paths of the on-disk contract: each directory class declares the files it holds as data.

The declarations are :class:`File` and :class:`Sub`; the classes also make the decisions that need only what is
on disk (which folds are finished, whether a config may be resumed)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Generic, TypeVar, overload

import pandas as pd

from .predictions import read_predictions

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


class _Directory:
    """A directory of the on-disk contract: its ``path``, and the files it holds declared as :class:`File` and
    :class:`Sub` class attributes."""

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.path))


class File:
    """A file (or folder) a directory class holds, declared as data: ``predictions = File(PREDICTIONS)`` on the
    class makes ``directory.predictions`` the ``Path`` ``directory.path / "predictions.csv"``; several parts name
    a file further down (``File(MODEL_DIR, MODEL_CARD)``)."""

    def __init__(self, *parts: str) -> None:
        self.parts = parts

    def __repr__(self) -> str:
        return f"File({'/'.join(self.parts)!r})"

    @overload
    def __get__(self, directory: None, owner: type) -> File: ...

    @overload
    def __get__(self, directory: _Directory, owner: type) -> Path: ...

    def __get__(self, directory: _Directory | None, owner: type) -> File | Path:
        # On the class, the declaration itself (what documentation tools and a reader inspect).
        return self if directory is None else directory.path.joinpath(*self.parts)


D = TypeVar("D", bound=_Directory)


class Sub(Generic[D]):
    """A directory of the contract inside a directory class, declared as data: ``report = Sub(ReportDir, REPORT)``
    makes ``run.report`` the ``ReportDir`` of ``run.path / "report"`` (no parts: the directory itself)."""

    def __init__(self, kind: type[D], *parts: str) -> None:
        self.kind = kind
        self.parts = parts

    def __repr__(self) -> str:
        return f"Sub({self.kind.__name__}, {'/'.join(self.parts)!r})"

    @overload
    def __get__(self, directory: None, owner: type) -> Sub[D]: ...

    @overload
    def __get__(self, directory: _Directory, owner: type) -> D: ...

    def __get__(self, directory: _Directory | None, owner: type) -> Sub[D] | D:
        return self if directory is None else self.kind(directory.path.joinpath(*self.parts))


class DatasetDir(_Directory):
    """A prepared dataset (``coronet data prepare``)."""

    manifest = File(MANIFEST)
    signatures = File(SIGNATURES)
    record = File(PREPARE_RECORD)

    def cache(self, size: int) -> Path:
        return self.path / CACHE_TEMPLATE.format(size=size)

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

    model = File(MODEL_DIR)
    model_card = File(MODEL_DIR, MODEL_CARD)
    metrics = File(METRICS)
    curves = File(CURVES)
    predictions = File(PREDICTIONS)
    checkpoints = File(CHECKPOINTS)
    last_checkpoint = File(CHECKPOINTS, LAST_CHECKPOINT)
    raw_predictions = File(RAW_PREDICTIONS)
    #: Where an optional Lightning logger (CSV, TensorBoard) writes.
    logs = File(LOGS)

    def has_model(self) -> bool:
        """The fold's model directory is written (its card is written last)."""
        return self.model_card.is_file()

    def finished(self) -> bool:
        """The fold has its model and predictions (a resumed run keeps it)."""
        return self.has_model() and self.predictions.is_file()


class _PageDir(_Directory):
    """A directory whose results are one page, as Markdown and as HTML, and a JSON summary."""

    markdown = File(REPORT_MD)
    html = File(REPORT_HTML)
    summary = File(SUMMARY)


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

    markdown = File(AUDIT_MD)
    html = File(AUDIT_HTML)
    summary = File(AUDIT_JSON)
    gradcam_mass = File("gradcam-mass.csv")
    gradcam_examples = File("gradcam-examples.png")
    acquisition_features = File("acquisition-features.csv")
    #: The run's training films with the lungs removed (test 6 trains on it).
    occluded_dataset = Sub(DatasetDir, "lungs-removed-dataset")

    def predictions(self, test: str) -> Path:
        """Test ``test``'s predictions (``predictions-<test>.csv``, the usual predictions layout)."""
        return self.path / f"predictions-{test}.csv"

    def retrained(self, fold: int) -> FoldDir:
        """Fold ``fold`` of the model retrained on the lungs-removed films."""
        return FoldDir(fold_dir(self.path / "retrained", fold))

    def read_summary(self) -> dict | None:
        """The written ``audit.json``, or None before the audit has finished."""
        return json.loads(self.summary.read_text()) if self.summary.is_file() else None


class RunDir(_Directory):
    """A run: cross-validation, fine-tune, external evaluation."""

    config = File(CONFIG)
    manifest = File(MANIFEST)
    predictions = File(PREDICTIONS)
    results = File(RESULTS)
    report = Sub(ReportDir, REPORT)
    audit = Sub(AuditDir, AUDIT)
    #: The adult-negative test's predictions (:meth:`cohort_test` of ``adult-test``).
    adult_test = File(ADULT_TEST, PREDICTIONS)
    #: The held-out collection's predictions (``leave-out/predictions.csv``), with ``leave_out`` set.
    leave_out = File(LEAVE_OUT, PREDICTIONS)
    #: An evaluation's copy of the card of the model it ran.
    model_card = File(MODEL_CARD)
    #: Films of the run's data that another dataset (the 4-class one, a model's training data) also has.
    overlap = File("overlap.csv")
    #: Films an evaluation could not read.
    skipped = File("skipped.csv")
    #: A fine-tune's record of the run it started from (``source-run.json``).
    source_run = File("source-run.json")
    #: A dataset the run prepared for itself (dataset-2 for a fine-tune on it).
    own_dataset = Sub(DatasetDir, REPRODUCE_DATASET)

    def cohort_test(self, test_dir: str) -> Path:
        """The predictions of a cohort test (``<test_dir>/predictions.csv``, :mod:`coronet.evaluation.cohorttest`)."""
        return self.path / test_dir / PREDICTIONS

    @property
    def no_overlap(self) -> RunDir:
        """The run restricted to the films no source model saw (:data:`NO_OVERLAP`)."""
        # A property, not a Sub: the class is not yet defined where its attributes are declared.
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

    dataset = Sub(DatasetDir, REPRODUCE_DATASET)
    #: The model trained on every image (``final=True``).
    final = Sub(FoldDir, REPRODUCE_FINAL)
    timings = File(TIMINGS)
    #: The overview report, written at the top of the directory.
    report = Sub(ReportDir)

    def run(self, name: str) -> RunDir:
        """The run of task ``name`` (``4class``, ``3class``, ``binary``, ``dataset2``)."""
        return RunDir(self.path / name)
