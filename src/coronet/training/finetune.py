"""``coronet finetune``: the paper's 3-class and binary models, and dataset-2, derived from a 4-class run.

For each fold the trained 4-class model of that fold gets a new last layer for the
task's classes (:func:`coronet.models.coronet.replace_classifier`); the rest of the network
keeps its weights. It is fine-tuned on the fold's training part and predicts the
fold's validation part, so the 4-class run's folds -- patient-grouped -- carry over and
no fine-tuned model has seen its validation images, either time.

Dataset-2 (Ozturk et al.; the paper's Table VI) has folds of its own. Its COVID-19
films are mostly Cohen films, many of which the 4-class models were trained on: the
run records each dataset-2 image that is the same film as an image of the 4-class
dataset, or a film of a patient who has films there (``overlap.csv``; the ``overlap``
and ``overlap_kind`` columns of the predictions), and writes a second run directory,
``no-overlap/``, holding only the predictions of images of films and patients the
4-class models never saw -- the honest number beside the paper's.

The run directory has the layout of :mod:`coronet.training` plus ``source-run.json``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import pandas as pd
import torch

from ..data.overlap import dataset_fingerprints, file_fingerprints, overlap_table
from ..data.prepare import PrepareConfig, prepare_dataset
from ..data.sources import find_source_root, read_source, source_dir
from ..data.sources.ozturk import FOLDERS as OZTURK_CLASS_FOLDERS
from ..layout import NO_OVERLAP, DatasetDir, RunDir
from ..models.coronet import CoroNet, replace_classifier
from ..models.modeldir import load_model_dir
from ..tasks import relabel, task_classes
from .fit import run_cv
from .profiles import TrainConfig, finetune_config

logger = logging.getLogger(__name__)

OZTURK_FOLDERS = tuple(OZTURK_CLASS_FOLDERS)


def read_source_run(run_dir: str | os.PathLike) -> tuple[dict, TrainConfig]:
    """The ``config.json`` record of a finished cross-validation run and its training settings."""
    record = RunDir(run_dir).read_config()
    return record, TrainConfig.from_dict(record["train"])


def fold_model(run_dir: str | os.PathLike, fold: int, num_classes: int, seed: int) -> CoroNet:
    """Fold ``fold``'s trained model from ``run_dir`` with a new ``num_classes``-way last layer."""
    model, _ = load_model_dir(RunDir(run_dir).fold(fold).model)
    torch.manual_seed(seed * 1_000_003 + fold)  # the new layer's initialisation is part of the run's seed
    return replace_classifier(model, num_classes).train()


def ozturk_root(path: str | os.PathLike) -> Path:
    """Dataset-2's own folder, given it or a data directory that holds it."""
    return find_source_root("ozturk", path, OZTURK_FOLDERS)


def prepare_dataset2(
    data: str | os.PathLike,
    out: Path,
    source: TrainConfig,
    folds: int,
    seed: int,
    per_class: int | None = None,
) -> Path:
    """Prepare dataset-2 (all its images, or ``per_class`` of each; patient-grouped folds) at the source's input size.

    An existing preparation in ``out`` is reused only when it was made with the same settings
    (images per class, seed, folds, image size); otherwise this refuses with a one-line message.
    """
    root = ozturk_root(data)
    config = PrepareConfig(
        sources=("ozturk",),
        class_counts=dict.fromkeys(("covid", "normal", "pneumonia"), per_class),
        folds=folds,
        seed=seed,
        image_size=source.input_size,
        source_roots={"ozturk": str(root)},
    )
    prepared = DatasetDir(out)
    if prepared.exists():
        previous = prepared.read_record()["config"] if prepared.record.is_file() else {}
        wanted = {"class_counts": config.class_counts, "seed": seed, "folds": folds, "image_size": source.input_size}
        differing = {k: (previous.get(k), v) for k, v in wanted.items() if previous.get(k) != v}
        if differing:
            raise ValueError(
                f"{out} holds dataset-2 prepared with other settings ("
                + ", ".join(f"{k} {old!r} there, {new!r} now" for k, (old, new) in differing.items())
                + "); use a new --out"
            )
        return out
    prepare_dataset(root.parent, out, config)
    return out


def finetune(
    source_run: str | os.PathLike,
    out: str | os.PathLike,
    task: str = "3class",
    profile: str = "paper",
    data: str | os.PathLike | None = None,
    folds: list[int] | None = None,
    resume: bool = False,
    progress: bool = True,
    data_per_class: int | None = None,
    **overrides,
) -> pd.DataFrame:
    """Fine-tune each fold's 4-class model of ``source_run`` for ``task``; write the run directory ``out``.

    data: dataset-2 (or a data directory holding it) to fine-tune and evaluate on instead of the
        source run's own images; the task must then be ``3class``.
    data_per_class: use a seeded sample of this many dataset-2 images per class (smoke runs).
    overrides: training settings replacing the fine-tuning profile's (``epochs=1`` ...).
    Returns the per-image predictions (all images, also for dataset-2).
    """
    source_run, out = Path(source_run), Path(out)
    run = RunDir(out)
    record, source = read_source_run(source_run)
    classes = task_classes(task)
    config = finetune_config(source, profile, classes, **overrides)
    source_dataset = Path(record["dataset"]["path"])
    info = _run_info(source_run, task, profile)
    out.mkdir(parents=True, exist_ok=True)
    source_manifest = RunDir(source_run).read_manifest()
    trained = _trained_folds(source_run, record)
    if data is None:
        dataset_dir, manifest = source_dataset, relabel(source_manifest, task)
        fold_of_model, folds = _own_folds(source_run, trained, folds)
    else:
        # dataset-2 is an experiment of its own (Table VI, its own folds): the 4-class run's held-out collection
        # means nothing there, and its films that the 4-class models saw are set apart as overlap instead
        config = config.with_overrides(leave_out=None)
        dataset_dir, manifest, fold_of_model = _on_dataset2(
            run, data, source, source_dataset, source_manifest, task, data_per_class, trained
        )
        info.update(paper_table="table6", dataset2=str(ozturk_root(data)))

    run.source_run.write_text(json.dumps({**info, "fold_models": fold_of_model}, indent=2) + "\n")
    predictions = run_cv(
        dataset_dir,
        out,
        config,
        profile=f"finetune-{profile}",
        folds=folds,
        resume=resume,
        progress=progress,
        manifest=manifest,
        record=info,
        initial_model=lambda f: fold_model(source_run, fold_of_model[f], len(classes), config.seed),
    )
    if data is not None:
        write_no_overlap_run(out, predictions)
    return predictions


def _run_info(source_run: Path, task: str, profile: str) -> dict:
    """What the fine-tuned run records of where it came from (``source-run.json``, and ``config.json`` beside its
    settings); ``card`` goes into every fold's model card."""
    return {
        "source_run": str(source_run.resolve()),
        "task": task,
        "finetune_profile": profile,
        "card": {"finetuned_from": {"run": str(source_run.resolve()), "task": "4class"}},
    }


def _trained_folds(source_run: Path, record: dict) -> list[int]:
    """The folds of the run ``source_run`` (its ``config.json`` ``record``) with a trained model; an error when none
    has one."""
    trained = [int(f) for f in record["folds"] if RunDir(source_run).fold(int(f)).has_model()]
    if not trained:
        raise FileNotFoundError(f"{source_run}: no finished fold (fold-K/model/) to fine-tune")
    return trained


def _own_folds(source_run: Path, trained: list[int], folds: list[int] | None) -> tuple[dict[int, int], list[int]]:
    """Fine-tuning on the source run's own images: ``(fold -> the 4-class fold model it starts from, the folds to
    run)``, each fold from its own model; ``folds`` (default: every trained one) must all have one."""
    folds = folds or trained
    missing = sorted(set(folds) - set(trained))
    if missing:
        raise ValueError(f"{source_run}: folds {missing} have no trained 4-class model")
    return {f: f for f in trained}, folds


def _on_dataset2(
    run: RunDir,
    data: str | os.PathLike,
    source: TrainConfig,
    source_dataset: Path,
    source_manifest: pd.DataFrame,
    task: str,
    per_class: int | None,
    trained: list[int],
) -> tuple[Path, pd.DataFrame, dict[int, int]]:
    """Fine-tuning on dataset-2 (``--data``): ``(its dataset prepared in the run, its rows for ``task`` marked with
    their overlap, fold -> the trained 4-class fold model it starts from)`` (:func:`_dataset2_rows`)."""
    if task != "3class":
        raise ValueError("dataset-2 has 3 classes: use --task 3class with --data")
    dataset_dir, manifest = _dataset2_rows(
        run, data, source, source_dataset, source_manifest.fold.nunique(), task, per_class
    )
    # any fold's 4-class model will do (dataset-2 is new data); cycle through the trained ones
    fold_of_model = {int(f): trained[(int(f) - 1) % len(trained)] for f in sorted(manifest.fold.unique())}
    return dataset_dir, manifest, fold_of_model


def _dataset2_rows(
    run: RunDir,
    data: str | os.PathLike,
    source: TrainConfig,
    source_dataset: Path,
    folds: int,
    task: str,
    per_class: int | None,
) -> tuple[Path, pd.DataFrame]:
    """Dataset-2 prepared in the run (:func:`prepare_dataset2`) and its rows for ``task``, each marked with whether
    (and how) it overlaps the 4-class dataset; the overlap is written to the run's ``overlap.csv``."""
    dataset_dir = prepare_dataset2(
        data, run.own_dataset.path, source, folds=folds, seed=source.seed, per_class=per_class
    )
    overlap = find_overlap(dataset_dir, source_dataset)
    overlap.to_csv(run.overlap, index=False)
    manifest = relabel(DatasetDir(dataset_dir).read_manifest(), task)
    kind = overlap.drop_duplicates("path").set_index("path")["kind"]
    manifest["overlap"] = manifest["path"].isin(kind.index)
    manifest["overlap_kind"] = manifest["path"].map(kind).astype(object).fillna("")
    counts = manifest.overlap_kind[manifest.overlap].value_counts()
    logger.info(
        f"dataset-2: {int(manifest.overlap.sum())} of {len(manifest)} images overlap the 4-class dataset "
        f"({counts.get('film', 0)} the same film, {counts.get('patient', 0)} another film of a training "
        f"patient) -> {run.overlap}"
    )
    return dataset_dir, manifest


def find_overlap(dataset_dir: Path, source_dataset: Path) -> pd.DataFrame:
    """Dataset-2 images the 4-class models may have learnt: the same film, or a film of the same patient.

    ``kind`` is ``film`` for an exact or near copy of a 4-class image and ``patient`` for a
    copy of a Cohen film (any, selected or not) of a patient who has films in the 4-class
    dataset: dataset-2's COVID-19 files carry no patient ids, so the Cohen metadata is the
    only way to see that two different films are one person.
    """
    ours = dataset_fingerprints(dataset_dir)
    source = dataset_fingerprints(source_dataset)
    films = overlap_table(ours, source).assign(kind="film")
    prepared = DatasetDir(source_dataset).read_record()
    cohen_root = Path(
        prepared["config"].get("source_roots", {}).get("cohen") or source_dir("cohen", prepared["data_dir"])
    )
    if not cohen_root.is_dir():
        return films
    cohen = read_source("cohen", cohen_root)
    cohen = cohen.assign(path=[str(Path(p).resolve()) for p in cohen["path"]])
    patients = overlap_table(ours, file_fingerprints(cohen)).assign(kind="patient")
    patients = patients[
        patients["reference_patient_id"].isin(set(source[0]["patient_id"])) & ~patients["path"].isin(set(films["path"]))
    ]
    return pd.concat([films, patients], ignore_index=True)


def write_no_overlap_run(out: Path, predictions: pd.DataFrame) -> Path:
    """``out/no-overlap/``: the run's config and the predictions of images that are not 4-class training films."""
    run = RunDir(out)
    clean = run.no_overlap
    clean.path.mkdir(exist_ok=True)
    shutil.copy2(run.config, clean.config)
    predictions[~predictions["overlap"].astype(bool)].to_csv(clean.predictions, index=False)
    return clean.path


__all__ = [
    "NO_OVERLAP",
    "finetune",
    "fold_model",
    "ozturk_root",
    "prepare_dataset2",
    "read_source_run",
    "write_no_overlap_run",
]
