"""Training one fold (``coronet train``) and k-fold cross-validation (``coronet cv``) with PyTorch Lightning.

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
"""

from __future__ import annotations

import csv
import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import timm
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader, Sampler, TensorDataset

from ..data.augment import resize_batch
from ..data.cohorts import ADULT, extra_rows
from ..data.dataset import CachedXrays, EpochShuffleSampler, ShardSampler, stratified_subset
from ..data.leaveout import held_out, not_trained_on
from ..data.prepare import cache_size, load_cache
from ..layout import (
    PROB_PREFIX,
    DatasetDir,
    FoldDir,
    RunDir,
    atomic_path,
    predictions_table,
)
from ..models.coronet import CoroNet, count_parameters, create_backbone, set_trainable
from ..models.imagenet import imagenet_provenance, imported_weights
from ..models.modeldir import save_model_dir
from ..tasks import label_targets
from .adversary import source_pairs
from .curves import plot_curves
from .module import (
    CoroNetModule,
    FeatureHeadModule,
    FoldModule,
    cpu_has_native_bf16,
    describe_precision,
    group_weights,
    resolve_precision,
)
from .profiles import TrainConfig
from .runs import finish_run, finished_folds, fold_summary, start_run, table1_accuracy

logger = logging.getLogger(__name__)
# Under --strategy ddp every process runs the command: rank 0 speaks for the run, the other ranks' lines are dropped.
logger.addFilter(lambda record: global_rank() == 0)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed (never half-written); loaded with weights_only."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class EpochLog(Callback):
    """Appends one row per epoch to ``metrics.csv`` (kept across resumes) and redraws ``curves.png``."""

    def __init__(self, fold_dir: Path, train_images: int):
        self.folder, self.train_images = FoldDir(fold_dir), train_images
        self._started, self._train_end, self._validated_epoch = 0.0, None, None

    def on_train_epoch_start(self, trainer, module):
        self._started, self._train_end = time.perf_counter(), None

    def on_validation_epoch_start(self, trainer, module):
        if trainer.training and self._train_end is None:  # validation inside fit ends the training part
            self._train_end = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module):
        self._validated_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer, module):
        if not trainer.is_global_zero:
            return
        seconds = (self._train_end or time.perf_counter()) - self._started
        metrics = trainer.callback_metrics
        validated = self._validated_epoch == trainer.current_epoch
        row = {
            "epoch": trainer.current_epoch + 1,
            "train_loss": _number(metrics.get("train_loss")),
            "train_acc": _number(metrics.get("train_acc")),
            "val_loss": _number(metrics.get("val_loss")) if validated else "",
            "val_acc": _number(metrics.get("val_acc")) if validated else "",
            "seconds": round(seconds, 2),
            "train_images_per_s": round(self.train_images / max(seconds, 1e-9), 2),
            "train_source_acc": _number(metrics.get("train_source_acc")),
        }
        rows = [r for r in _read_rows(self.folder.metrics) if int(r["epoch"]) < row["epoch"]] + [row]
        write_metrics(rows, self.folder.metrics)
        plot_curves(self.folder.metrics, self.folder.curves)


#: train_source_acc: how often the source adversary named a film's source (empty without one; chance is 1/sources)
METRICS_FIELDS = [
    "epoch",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "seconds",
    "train_images_per_s",
    "train_source_acc",
]


def write_metrics(rows: list[dict], path: Path) -> None:
    """``metrics.csv``: one row per epoch."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRICS_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _number(value) -> float | str:
    return "" if value is None else round(float(value), 6)


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------- one fold
@dataclass
class FoldResult:
    fold: int | None
    accuracy: float
    predictions: pd.DataFrame
    directory: Path
    train_images_per_s: float | None


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


def load_manifest(dataset_dir: Path, classes, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
    """The dataset's manifest (or the given one), checked to hold only labels among ``classes`` (or partial
    labels made of them, :data:`coronet.tasks.PARTIAL_LABELS`)."""
    if manifest is None:
        manifest = DatasetDir(dataset_dir).read_manifest()
    try:
        label_targets(classes, manifest.label)
    except ValueError as error:
        raise ValueError(f"{dataset_dir}: {error}") from None
    return manifest


def _logger(config: TrainConfig, logs: Path):
    """Lightning's logger for ``config.logger`` (runs can then be compared in standard tools), or False."""
    if config.logger == "csv":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(logs, name="", version="")
    if config.logger == "tensorboard":
        try:
            from lightning.pytorch.loggers import TensorBoardLogger

            return TensorBoardLogger(logs, name="", version="")
        except ModuleNotFoundError as error:
            raise ValueError("logger=tensorboard needs TensorBoard: pip install tensorboard") from error
    return False


def _devices(value: str):
    value = str(value)
    if value == "auto" or value.startswith("[") or "," in value:
        return value if value == "auto" else [int(v) for v in value.strip("[]").split(",") if v != ""]
    return int(value)


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
    parts = _fold_parts(dataset_dir, fold, config, manifest)
    cache, train_rows, val_rows, class_index, masks = parts
    if config.head_on_features and config.train_layers != "all" and model is not None:
        return fit_head_on_features(
            dataset_dir, fold, out, config, model, *parts, card, callbacks, resume=resume, max_epochs=max_epochs
        )

    train_set = CachedXrays(cache, train_rows.cache_index, train_rows.label.map(class_index), seed=config.seed)
    val_set = CachedXrays(cache, val_rows.cache_index, val_rows.label.map(class_index))
    if progress:
        logger.info(describe_precision(config))
    return _train_fold(
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


@dataclass
class FoldParts:
    """What one fold trains and validates on: rows of the manifest and the datasets made of them."""

    dataset_dir: Path
    fold: int | None
    train_rows: pd.DataFrame
    val_rows: pd.DataFrame
    train_set: CachedXrays | TensorDataset
    val_set: CachedXrays | TensorDataset


def _train_fold(
    folder: FoldDir,
    parts: FoldParts,
    config: TrainConfig,
    make_module,
    card: dict | None,
    callbacks,
    resume: bool,
    max_epochs: int | None,
    progress: bool,
    precision: str | None = None,
    network: CoroNet | None = None,
) -> FoldResult:
    """Train ``make_module(raw predictions path)`` with the fold's Trainer, then write the fold's predictions and,
    once every epoch is done, its model directory (``network``, else the module's evaluated model).

    Both kinds of training end here: the whole network (:func:`fit_fold`) and its head on features
    (:func:`fit_head_on_features`)."""
    fold, train_set, val_set = parts.fold, parts.train_set, parts.val_set
    folder.raw_predictions.unlink(missing_ok=True)
    task = make_module(folder.raw_predictions)
    epochs = config.epochs if max_epochs is None else min(max_epochs, config.epochs)
    validating = len(val_set) > 0
    trainer = _fold_trainer(
        config,
        folder,
        epochs,
        len(train_set),
        validating,
        progress,
        callbacks,
        precision,  # type: ignore[arg-type]
    )
    loaders = _Loaders(train_set, val_set, config)
    finished_epochs = _fit(trainer, task, loaders, folder.last_checkpoint if resume else None, validating)
    if not trainer.is_global_zero:
        return FoldResult(fold, float("nan"), pd.DataFrame(), folder.path, None)
    accuracy, predictions = None, pd.DataFrame()
    if validating:
        predictions = prediction_table(parts.val_rows, pd.read_csv(folder.raw_predictions), fold)
        predictions.to_csv(folder.predictions, index=False)
        folder.raw_predictions.unlink()
        accuracy = table1_accuracy(predictions)
    if finished_epochs >= config.epochs:  # finished: write the model directory
        model = network if network is not None else task.evaluated_model
        _save_fold_model(
            model, folder.path, config, parts.dataset_dir, fold, accuracy, parts.train_rows, len(val_set), card
        )
        if not config.keep_checkpoint:
            folder.last_checkpoint.unlink(missing_ok=True)
    epoch_rows = _read_rows(folder.metrics)
    speed = float(epoch_rows[-1]["train_images_per_s"]) if epoch_rows and validating else None
    return FoldResult(fold, float("nan") if accuracy is None else accuracy, predictions, folder.path, speed)


def _fold_parts(
    dataset_dir: Path, fold: int | None, config: TrainConfig, manifest: pd.DataFrame | None
) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, dict[str, int], np.ndarray]:
    """(image cache, training rows, validation rows, label -> target index, target masks) of one fold
    (``None``: all rows train). Targets are the classes, then any partial labels (:func:`label_targets`)."""
    manifest = load_manifest(dataset_dir, config.classes, manifest)
    names, masks = label_targets(config.classes, manifest.label)
    class_index = {name: k for k, name in enumerate(names)}
    cache = load_cache(dataset_dir, cache_size(dataset_dir, config.input_size))
    train_rows = training_rows(manifest, fold, config)
    val_rows = manifest[(manifest.fold == fold) & ~held_out(manifest, config.leave_out)]
    if train_rows.empty or (val_rows.empty and fold is not None):
        raise ValueError(f"fold {fold}: empty training or validation part (folds: {sorted(manifest.fold.unique())})")
    return cache, train_rows, val_rows, class_index, masks


def training_rows(manifest: pd.DataFrame, fold: int | None, config: TrainConfig) -> pd.DataFrame:
    """The rows fold ``fold``'s model trains on: the other folds' (every row for ``None``), without the films of
    ``config.leave_out`` and those linked to them (:func:`coronet.data.leaveout.not_trained_on`), then
    ``config.train_per_class`` of each label."""
    part = manifest[(manifest.fold != fold) & ~not_trained_on(manifest, config.leave_out)]
    return stratified_subset(part, config.train_per_class, config.seed)


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


def _save_fold_model(
    model: CoroNet,
    out: Path,
    config: TrainConfig,
    dataset_dir: Path,
    fold: int | None,
    accuracy: float | None,
    train_rows: pd.DataFrame,
    val_images: int,
    card: dict | None,
) -> None:
    """``out/model``: the fold's final network and its card (settings, data, validation accuracy)."""
    extra = {name: len(rows) for name, rows in extra_rows(train_rows).items()}
    save_model_dir(
        model.to(memory_format=torch.contiguous_format),
        FoldDir(out).model,
        classes=config.classes,
        backbone=config.backbone,
        input_size=config.input_size,
        hidden=config.hidden,
        dropout=config.dropout,
        extra={
            "name": f"coronet-{config.backbone}-" + (f"fold{fold}" if fold is not None else "all-images"),
            "training": {
                "dataset_sha256": DatasetDir(dataset_dir).manifest_sha256(),
                "dataset_path": str(Path(dataset_dir).resolve()),
                "fold": fold,
                "train_images": len(train_rows),
                "epochs": config.epochs,
                "adult_negatives": extra.get(ADULT.name, 0),
                "extra_cohorts": extra,  # cohort -> training films (coronet.data.cohorts)
                "initial_weights": config.weights,
                **(
                    {"initial_weights_source": imagenet_provenance(config.backbone)}
                    if config.weights == "imagenet"
                    else {}
                ),
                "precision": resolve_precision(config),
                "config": config.to_dict(),
            },
            "inference": {"tta": "hflip" if config.tta else None},
            "metrics": {"val_accuracy": accuracy, "val_images": val_images},
            "parameters": count_parameters(model),
            **(card or {}),
        },
    )


# --------------------------------------------------------------------------- the head alone, on features
def backbone_features(
    model: CoroNet, cache: np.ndarray, rows, input_size: int, mirrored: bool = False, batch_size: int = 32
) -> torch.Tensor:
    """The frozen backbone's flattened feature maps (N, C*H*W) of cache ``rows`` (mirror images if asked).

    The weights are channels_last while it runs, as the Predictor's (2x faster on a CPU than channels_last input
    alone), and contiguous again afterwards (safetensors saves contiguous tensors only)."""
    model.eval()
    rows = np.asarray(rows)
    parts = [torch.zeros(0, int(np.prod(model.feature_shape)))]  # no rows: (0, C*H*W)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    try:
        with torch.inference_mode():
            for start in range(0, len(rows), batch_size):
                images = torch.from_numpy(np.asarray(cache[rows[start : start + batch_size]]))[:, None]
                images = resize_batch(images.float().div_(255), input_size)
                if mirrored:
                    images = images.flip(-1)
                images = images.contiguous(memory_format=torch.channels_last)
                parts.append(model.forward_features(images).flatten(1).float())
    finally:
        model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return torch.cat(parts)


def _feature_datasets(
    model: CoroNet,
    cache: np.ndarray,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    class_index: dict[str, int],
    config: TrainConfig,
) -> tuple[TensorDataset, TensorDataset]:
    """The frozen backbone's features of the training and validation rows, as ``(features, target, row index)``
    datasets; with ``config.tta`` the validation set also holds the mirror images' features, before the target."""

    def dataset(rows: pd.DataFrame, *mirrored: bool) -> TensorDataset:
        features = [backbone_features(model, cache, rows.cache_index, config.input_size, m) for m in mirrored]
        targets = torch.from_numpy(rows.label.map(class_index).to_numpy(dtype=np.int64, copy=True))
        return TensorDataset(*features, targets, torch.arange(len(rows)))

    return dataset(train_rows, False), dataset(val_rows, False, *([True] if config.tta else []))


def fit_head_on_features(
    dataset_dir: Path,
    fold: int | None,
    out: Path,
    config: TrainConfig,
    model: CoroNet,
    cache: np.ndarray,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    class_index: dict[str, int],
    masks: np.ndarray,
    card: dict | None = None,
    callbacks=(),
    resume: bool = False,
    max_epochs: int | None = None,
    progress: bool = False,
) -> FoldResult:
    """Fine-tune only the dense head (or the last layer) on features the frozen backbone computes once.

    With the backbone frozen and in eval mode its output for a film never changes, so it is
    computed once (no augmentation) and the head trains on it for ``config.epochs`` in seconds
    (:class:`FeatureHeadModule`, in 32-bit), with the profile's optimiser, schedule and label smoothing
    (EMA and mixup do not apply). The Trainer is :func:`fit_fold`'s: the same fold directory, metrics,
    curves, progress and checkpoints (of the head alone), and ``resume``/``max_epochs`` work as there.
    """
    started = time.perf_counter()
    set_trainable(model, config.train_layers)
    train_set, val_set = _feature_datasets(model, cache, train_rows, val_rows, class_index, config)
    logger.info(
        f"fold {fold}: backbone features of {len(train_set) + len(val_set)} films in "
        f"{time.perf_counter() - started:.0f} s; training the {config.train_layers} on them"
    )
    # a small dense head: 32-bit costs nothing and rounds nothing
    return _train_fold(
        FoldDir(out),
        FoldParts(dataset_dir, fold, train_rows, val_rows, train_set, val_set),
        config,
        lambda raw: FeatureHeadModule(config, model.head, predictions_path=raw, target_masks=masks),
        {**(card or {}), "head_trained_on_features": True},
        callbacks,
        resume,
        max_epochs,
        progress,
        precision="32-true",
        network=model,
    )


def _fold_trainer(
    config: TrainConfig,
    folder: FoldDir,
    epochs: int,
    train_images: int,
    validating: bool,
    progress: bool,
    callbacks=(),
    precision: str | None = None,
) -> pl.Trainer:
    """The Lightning Trainer of one fold, whatever trains (the network, or its head on features): deterministic,
    validating every ``config.val_every`` epochs, ``metrics.csv`` and ``curves.png`` in ``out`` after every
    epoch (:class:`EpochLog`), ``checkpoints/last.ckpt`` (written atomically) every ``config.checkpoint_every``.

    precision: Lightning's precision instead of the config's (:func:`resolve_precision`).
    """
    return pl.Trainer(
        limit_val_batches=1.0 if validating else 0,
        max_epochs=epochs,
        accelerator=config.accelerator,
        devices=_devices(config.devices),
        strategy=config.strategy,
        precision=precision or resolve_precision(config),  # type: ignore[arg-type]
        deterministic=True,
        use_distributed_sampler=False,  # our samplers shard by rank themselves
        check_val_every_n_epoch=max(1, min(config.val_every, epochs)),
        num_sanity_val_steps=0,
        logger=_logger(config, folder.logs),
        enable_progress_bar=progress,
        enable_model_summary=False,
        default_root_dir=str(folder.path),
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            # last.ckpt every checkpoint_every epochs, overwritten (Lightning 2.6 writes save_last only beside a
            # top-k save); ~400 MB each for CoroNet, so a fast GPU run may write it less often
            ModelCheckpoint(
                dirpath=folder.checkpoints,
                filename="last",
                save_top_k=1,
                save_last=False,
                enable_version_counter=False,
                every_n_epochs=config.checkpoint_every,
                save_on_train_epoch_end=True,
            ),
            EpochLog(folder.path, train_images),
            *([TQDMProgressBar(refresh_rate=5)] if progress else []),
            *callbacks,
        ],
    )


def _fit(trainer: pl.Trainer, task: FoldModule, loaders: _Loaders, ckpt: Path | None, validating: bool) -> int:
    """Train (continuing from ``ckpt`` if it exists), then validate unless the last epoch was; the epochs finished."""
    trainer.fit(task, datamodule=loaders, ckpt_path=str(ckpt) if ckpt is not None and ckpt.is_file() else None)
    finished_epochs = trainer.current_epoch
    # Decided from the module's own state, which every DDP rank shares, never from a file rank 0 wrote:
    # a rank that validated alone would wait for the others forever.
    if validating and task.validated_epoch != finished_epochs - 1:  # the last epoch was not validated
        trainer.validate(task, datamodule=loaders, verbose=False)
    return finished_epochs


class _Indices(Sampler[int]):
    """A sampler's ``(epoch, index)`` pairs as plain indices, for a dataset that needs no epoch (a TensorDataset)."""

    def __init__(self, sampler: EpochShuffleSampler):
        self.sampler = sampler

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it on the loader's sampler
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return (index for _, index in self.sampler)


class _Loaders(pl.LightningDataModule):
    """Builds the loaders inside each process, so samplers know their rank (DDP). Films (:class:`CachedXrays`)
    are read by ``config.num_workers`` workers; a ``TensorDataset`` (features in memory) by this process."""

    def __init__(
        self, train_set: CachedXrays | TensorDataset, val_set: CachedXrays | TensorDataset, config: TrainConfig
    ):
        super().__init__()
        self.train_set, self.val_set, self.config = train_set, val_set, config

    def _loader(self, dataset, sampler, batch_size):
        workers = 0 if isinstance(dataset, TensorDataset) else self.config.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self):
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = EpochShuffleSampler(len(self.train_set), self.config.seed, world, rank)
        if isinstance(self.train_set, TensorDataset):
            return self._loader(self.train_set, _Indices(sampler), self.config.batch_size)
        return self._loader(self.train_set, sampler, self.config.batch_size)

    def val_dataloader(self):
        world, rank = self.trainer.world_size, self.trainer.global_rank
        return self._loader(self.val_set, ShardSampler(len(self.val_set), world, rank), max(32, self.config.batch_size))


def prediction_table(rows: pd.DataFrame, probabilities: pd.DataFrame, fold: int | None) -> pd.DataFrame:
    """:func:`coronet.layout.predictions_table` from a validation pass's output (``index``, ``prob_<class>``...,
    ``rank``), checked to hold one prediction per row, in order; ``rank`` is the process that predicted it."""
    if len(probabilities) != len(rows) or not (probabilities["index"].to_numpy() == np.arange(len(rows))).all():
        raise RuntimeError(f"fold {fold}: {len(probabilities)} predictions for {len(rows)} validation images")
    columns = [c for c in probabilities.columns if c.startswith(PROB_PREFIX)]
    table = predictions_table(rows, probabilities[columns].to_numpy(), [c[len(PROB_PREFIX) :] for c in columns], fold)
    table["rank"] = probabilities["rank"].to_numpy()  # the process that predicted it (DDP)
    return table


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
    all_folds = sorted(int(f) for f in manifest.fold.unique())
    folds = folds or all_folds
    missing = sorted(set(folds) - set(all_folds))
    if missing:
        raise ValueError(f"folds {missing} not in the dataset (it has {all_folds})")
    # Under --strategy ddp every process runs this command; only rank 0 writes the run directory, and the
    # other ranks take its decision about finished folds from the environment the launcher gives them.
    run = RunDir(out)
    rank = global_rank()
    if rank == 0:
        start_run(run, DatasetDir(dataset_dir), manifest, config, profile, folds, record)
        logger.info(describe_precision(config))
    else:
        progress = False
    finished = finished_folds(run, folds, resume, rank)
    bar = _overall_bar(run, manifest, config, folds, finished) if progress else None
    results = []
    for fold in folds:
        if fold in finished:
            if rank == 0:
                results.append(pd.read_csv(run.fold(fold).predictions))
                logger.info(f"fold {fold}: already finished, kept")
            continue
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
            card=(record or {}).get("card"),
            callbacks=[OverallProgress(bar, fold)] if bar is not None else (),
        )
        if rank == 0:
            logger.info(
                f"fold {fold}: accuracy {result.accuracy:.4f} on {len(result.predictions)} images "
                f"({time.perf_counter() - started:.0f} s, "
                f"{result.train_images_per_s or float('nan'):.1f} train images/s)"
            )
            results.append(result.predictions)
    if bar is not None:
        bar.close()
    if rank != 0:
        return pd.DataFrame()
    combined, summary = finish_run(run, results)
    logger.info(summary)
    return combined


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


def global_rank() -> int:
    """This process's rank as the launcher (Lightning's DDP re-run, torchrun, SLURM) set it; 0 when alone."""
    from lightning.fabric.utilities.rank_zero import _get_rank

    return _get_rank() or 0


class OverallProgress(Callback):
    """Advances one progress bar over every fold's training images (its ETA is the whole run's)."""

    def __init__(self, bar, fold: int):
        self.bar, self.fold = bar, fold

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.is_global_zero:
            self.bar.set_description(f"fold {self.fold}, epoch {trainer.current_epoch + 1}", refresh=False)
            self.bar.update(len(batch[1]) * trainer.world_size)


def _overall_bar(run: RunDir, manifest: pd.DataFrame, config: TrainConfig, folds: list[int], finished: set[int]):
    """A tqdm bar over the training images of all epochs of all folds; work already done counts as done."""
    from tqdm.auto import tqdm

    total = done = 0
    for fold in folds:
        images = len(training_rows(manifest, fold, config))
        total += images * config.epochs
        epochs_done = config.epochs if fold in finished else len(_read_rows(run.fold(fold).metrics))
        done += images * min(epochs_done, config.epochs)
    return tqdm(
        total=total,
        initial=done,
        unit="img",
        unit_scale=True,
        mininterval=5,
        dynamic_ncols=True,
        desc="training",
        smoothing=0.05,
    )


__all__ = [
    "CoroNetModule",
    "check_training_config",
    "cpu_has_native_bf16",
    "fit_final",
    "describe_precision",
    "resolve_precision",
    "FoldResult",
    "fit_fold",
    "fold_summary",
    "plot_curves",
    "run_cv",
]
