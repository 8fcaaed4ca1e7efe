"""Training one fold (``coronet train``), the final model on every image, and k-fold cross-validation
(``coronet cv``) with PyTorch Lightning.

A fold directory holds::

    metrics.csv            one row per epoch: train/val loss and accuracy, seconds, images/s
    curves.png             the paper's Fig. 4 (accuracy and loss per epoch)
    checkpoints/last.ckpt  written atomically after every epoch; ``resume`` continues from it
    model/                 model.safetensors + model.json (the final-epoch model)
    predictions.csv        path, patient_id, fold, label, prob_<class>... for the fold's validation images

A CV run directory adds ``config.json`` (resolved settings, dataset hash, versions),
``manifest.csv`` (the dataset with its folds), the combined ``predictions.csv`` and
``results.md``. The model evaluated is always the last epoch's: choosing an epoch by
its validation score would leak the test fold into the result.

The parts live beside this module: the rows and loaders of a fold (:mod:`.loaders`), its Trainer and ending
(:mod:`.trainer`), the callbacks (:mod:`.callbacks`) and the head trained on features (:mod:`.features`).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import timm
import torch

from ..data.dataset import CachedXrays
from ..data.leaveout import held_out, not_trained_on
from ..layout import DatasetDir, FoldDir, RunDir
from ..models.coronet import CoroNet, create_backbone
from ..models.imagenet import imported_weights
from .adversary import source_pairs
from .callbacks import OverallProgress, overall_bar
from .curves import plot_curves
from .features import backbone_features, fit_head_on_features
from .loaders import FoldParts, fold_rows, load_manifest, training_rows
from .module import (
    CoroNetModule,
    cpu_has_native_bf16,
    describe_precision,
    group_weights,
    resolve_precision,
)
from .profiles import TrainConfig
from .ranks import global_rank, rank_zero_logger
from .runs import finish_run, finished_folds, fold_summary, start_run
from .trainer import FoldResult, train_fold

logger = rank_zero_logger(__name__)


@functools.cache
def _check_backbone(backbone: str, weights: str) -> None:
    if not timm.is_model(backbone):
        raise ValueError(
            f"unknown backbone {backbone!r}: not a timm model name (e.g. legacy_xception, resnet50, "
            "densenet121; timm.list_models() lists them)"
        )
    if weights == "imagenet" and imported_weights(backbone) is not None:
        return  # offline and checked: no need to build the network twice
    if weights not in ("none", "", None):
        create_backbone(backbone, weights)  # raises WeightsError with what to do instead


def check_training_config(config: TrainConfig) -> None:
    """Refuse settings that cannot train, before anything is written: an unknown backbone, weights
    that cannot be had (ImageNet offline, a missing or unfitting file). Raises ``ValueError`` or
    :class:`coronet.models.weightfiles.WeightsError` with a one-line message."""
    _check_backbone(config.backbone, config.weights)


# --------------------------------------------------------------------------- one fold
def fit_fold(
    dataset_dir: str | os.PathLike,
    fold: int | None,
    out: str | os.PathLike,
    config: TrainConfig,
    resume: bool = False,
    max_epochs: int | None = None,
    progress: bool = True,
    model: CoroNet | None = None,
    manifest: pd.DataFrame | None = None,
    card: dict | None = None,
    callbacks=(),
) -> FoldResult:
    """Train on every fold but ``fold``, validate on ``fold``, write the fold directory ``out``.

    fold: ``None`` trains on every image and validates on none (a model for deployment, after
        cross-validation has measured the recipe): no predictions, the card says so.
    resume: continue from ``out/checkpoints/last.ckpt`` when it exists.
    max_epochs: stop after this many epochs (default ``config.epochs``); a later call with
        ``resume=True`` continues exactly where it stopped.
    model: start from this network instead of building one from ``config`` (fine-tuning).
    manifest: use these rows (e.g. relabelled for another task) instead of the dataset's manifest.csv;
        ``cache_index`` still points into the dataset's image cache.
    card: extra entries for the model card (e.g. where a fine-tuned model came from).
    callbacks: extra Lightning callbacks (e.g. a progress bar over several folds).
    """
    dataset_dir, out = Path(dataset_dir), Path(out)
    if model is None:
        check_training_config(config)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")
    parts = fold_rows(dataset_dir, fold, config, manifest)
    cache, train_rows, val_rows, class_index, masks = parts
    if config.head_on_features and config.train_layers != "all" and model is not None:
        return fit_head_on_features(
            dataset_dir, fold, out, config, model, *parts, card, callbacks, resume=resume, max_epochs=max_epochs
        )

    train_set = CachedXrays(cache, train_rows.cache_index, train_rows.label.map(class_index), seed=config.seed)
    val_set = CachedXrays(cache, val_rows.cache_index, val_rows.label.map(class_index))
    if progress:
        logger.info(describe_precision(config))
    return train_fold(
        FoldDir(out),
        FoldParts(dataset_dir, fold, train_rows, val_rows, train_set, val_set),
        config,
        lambda raw: _network_module(config, model, raw, masks, train_rows, class_index),
        card,
        callbacks,
        resume,
        max_epochs,
        progress,
    )


def _network_module(
    config: TrainConfig,
    model: CoroNet | None,
    predictions_path: Path,
    masks: np.ndarray,
    train_rows: pd.DataFrame,
    class_index: dict[str, int],
) -> CoroNetModule:
    """The module that trains the whole network, with the source adversary and balancing the config asks for."""
    sources = adversary_sources(train_rows, class_index) if config.source_adversary else None
    weights = group_weights(_source_label(train_rows), config.source_balance) if config.source_balance else None
    return CoroNetModule(
        config,
        model=model,
        predictions_path=predictions_path,
        target_masks=masks,
        sources=sources,
        sample_weights=weights,
    )


def _source_label(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """Each row's (source, label): the groups ``source_balance`` weighs alike."""
    sources = rows["source"].fillna("unknown") if "source" in rows else pd.Series("unknown", index=rows.index)
    return list(zip(sources, rows["label"]))


def adversary_sources(train_rows: pd.DataFrame, class_index: dict[str, int]):
    """What the source adversary learns from: ``(source index of each training row, which sources each
    target has, for targets with two or more)`` (:func:`coronet.training.adversary.source_pairs`)."""
    codes, names = pd.factorize(pd.Series([source for source, _ in _source_label(train_rows)]))
    targets = train_rows.label.map(class_index).to_numpy()
    pairs = source_pairs(targets, codes, len(class_index), len(names))
    labels = {
        label: [str(names[k]) for k in np.flatnonzero(pairs[t])] for label, t in class_index.items() if pairs[t].any()
    }
    logger.info(
        "source adversary: " + "; ".join(f"{label} from {', '.join(found)}" for label, found in labels.items())
        if labels
        else "source adversary: off (no label has films from two sources)"
    )
    return codes, pairs


# --------------------------------------------------------------------------- the final model
def fit_final(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    validated_by: dict | None = None,
    progress: bool = True,
) -> FoldResult:
    """One model on every image of a finished cross-validation run, with the run's settings (deployment).

    The cross-validation measured the recipe; this model has no validation images of its own,
    so its card records ``validated_by``: the run and its figures.
    """
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    record = run.read_config()
    config = TrainConfig.from_dict(record["train"])
    card = {
        "validated_by": {
            "run": str(run_dir.resolve()),
            "profile": record.get("profile"),
            "folds": record.get("folds"),
            **(validated_by or {}),
        }
    }
    return fit_fold(
        record["dataset"]["path"],
        None,
        out,
        config,
        resume=True,
        progress=progress,
        manifest=run.read_manifest(),
        card=card,
    )


# --------------------------------------------------------------------------- cross-validation
def run_cv(
    dataset_dir: str | os.PathLike,
    out: str | os.PathLike,
    config: TrainConfig,
    profile: str = "custom",
    folds: list[int] | None = None,
    resume: bool = False,
    progress: bool = True,
    manifest: pd.DataFrame | None = None,
    initial_model: Callable[[int], CoroNet] | None = None,
    record: dict | None = None,
) -> pd.DataFrame:
    """Train and evaluate every fold (or ``folds``) of the prepared dataset into one run directory.

    Finished folds (with a model directory) are kept when ``resume`` is set; an interrupted fold
    continues from its last checkpoint. Returns the combined per-image predictions.

    manifest: the rows to use instead of the dataset's own manifest (a relabelled task).
    initial_model: fold -> the network that fold starts from (fine-tuning); default: a new one.
    record: extra entries for the run's ``config.json`` (e.g. the task and the source run).
    """
    dataset_dir, out = Path(dataset_dir), Path(out)
    if initial_model is None:
        check_training_config(config)
    manifest = load_manifest(dataset_dir, config.classes, manifest)
    _log_leave_out(manifest, config.leave_out)
    folds = _chosen_folds(manifest, folds)
    # Under --strategy ddp every process runs this command; only rank 0 writes the run directory, and the
    # other ranks take its decision about finished folds from the environment the launcher gives them.
    run, rank = RunDir(out), global_rank()
    if rank == 0:
        start_run(run, DatasetDir(dataset_dir), manifest, config, profile, folds, record)
        logger.info(describe_precision(config))
    finished = finished_folds(run, folds, resume, rank)
    bar = None
    if progress and rank == 0:
        images = {fold: len(training_rows(manifest, fold, config)) for fold in folds}
        bar = overall_bar(run, images, config.epochs, finished)
    results = []
    for fold in folds:
        if fold in finished:
            if rank == 0:
                results.append(pd.read_csv(run.fold(fold).predictions))
                logger.info(f"fold {fold}: already finished, kept")
            continue
        callbacks = [OverallProgress(bar, fold)] if bar is not None else []
        card = (record or {}).get("card")
        result = _cv_fold(dataset_dir, run, fold, config, resume, initial_model, manifest, card, callbacks)
        if rank == 0:
            results.append(result.predictions)
    if bar is not None:
        bar.close()
    if rank != 0:
        return pd.DataFrame()
    combined, summary = finish_run(run, results)
    logger.info(summary)
    return combined


def _chosen_folds(manifest: pd.DataFrame, folds: list[int] | None) -> list[int]:
    """``folds`` (default: every fold of the manifest), each checked to be one of the manifest's."""
    all_folds = sorted(int(f) for f in manifest.fold.unique())
    folds = folds or all_folds
    missing = sorted(set(folds) - set(all_folds))
    if missing:
        raise ValueError(f"folds {missing} not in the dataset (it has {all_folds})")
    return folds


def _cv_fold(
    dataset_dir: Path,
    run: RunDir,
    fold: int,
    config: TrainConfig,
    resume: bool,
    initial_model: Callable[[int], CoroNet] | None,
    manifest: pd.DataFrame,
    card: dict | None,
    callbacks: list,
) -> FoldResult:
    """Fold ``fold`` of a cross-validation run trained (or continued, with ``resume``) in its fold directory, from
    ``initial_model(fold)`` if given, its accuracy and speed logged in one line."""
    started = time.perf_counter()
    result = fit_fold(
        dataset_dir,
        fold,
        run.fold(fold).path,
        config,
        resume=resume,
        progress=False,
        model=initial_model(fold) if initial_model is not None else None,
        manifest=manifest,
        card=card,
        callbacks=callbacks,
    )
    logger.info(
        f"fold {fold}: accuracy {result.accuracy:.4f} on {len(result.predictions)} images "
        f"({time.perf_counter() - started:.0f} s, "
        f"{result.train_images_per_s or float('nan'):.1f} train images/s)"
    )
    return result


def _log_leave_out(manifest: pd.DataFrame, source: str | None) -> None:
    """Say what leaving ``source`` out takes from training (a ``ValueError`` when the data has none of it)."""
    if source is None:
        return
    excluded, films = not_trained_on(manifest, source), held_out(manifest, source)
    linked = int((excluded & ~films).sum())
    logger.info(
        f"leave out {source}: its {int(films.sum())} films are in no fold's training or validation"
        + (
            f"; {linked} films of other sources share a patient or duplicate chain with them and are not trained on"
            if linked
            else ""
        )
    )
    for label in sorted(set(manifest.label) - set(manifest.label[~excluded])):
        logger.warning(f"leave out {source}: no {label} film is left to train on")


__all__ = [
    "CoroNetModule",
    "adversary_sources",
    "backbone_features",
    "check_training_config",
    "cpu_has_native_bf16",
    "fit_final",
    "fit_head_on_features",
    "describe_precision",
    "global_rank",
    "resolve_precision",
    "FoldResult",
    "fit_fold",
    "fold_summary",
    "plot_curves",
    "run_cv",
    "training_rows",
]
