"""One fold's Lightning Trainer and the fold's ending, whatever trains (the whole network, or its head on
features): the Trainer, the fit, then the fold's ``predictions.csv`` and model directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.callbacks import ModelCheckpoint, TQDMProgressBar

from ..data.cohorts import ADULT, extra_rows
from ..layout import PROB_PREFIX, DatasetDir, FoldDir, predictions_table
from ..models.coronet import CoroNet, count_parameters
from ..models.imagenet import imagenet_provenance
from ..models.modeldir import save_model_dir
from .callbacks import AtomicCheckpointIO, EpochLog, read_rows
from .loaders import FoldLoaders, FoldParts
from .module import FoldModule, resolve_precision
from .profiles import TrainConfig
from .runs import table1_accuracy


@dataclass
class FoldResult:
    fold: int | None
    accuracy: float
    predictions: pd.DataFrame
    directory: Path
    train_images_per_s: float | None


def train_fold(
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

    Both kinds of training end here: the whole network (:func:`coronet.training.fit.fit_fold`) and its head on
    features (:func:`coronet.training.features.fit_head_on_features`)."""
    fold, train_set, val_set = parts.fold, parts.train_set, parts.val_set
    folder.raw_predictions.unlink(missing_ok=True)
    task = make_module(folder.raw_predictions)
    epochs = config.epochs if max_epochs is None else min(max_epochs, config.epochs)
    validating = len(val_set) > 0
    trainer = fold_trainer(
        config,
        folder,
        epochs,
        len(train_set),
        validating,
        progress,
        callbacks,
        precision,  # type: ignore[arg-type]
    )
    loaders = FoldLoaders(train_set, val_set, config)
    finished_epochs = fit_then_validate(trainer, task, loaders, folder.last_checkpoint if resume else None, validating)
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
    epoch_rows = read_rows(folder.metrics)
    speed = float(epoch_rows[-1]["train_images_per_s"]) if epoch_rows and validating else None
    return FoldResult(fold, float("nan") if accuracy is None else accuracy, predictions, folder.path, speed)


def fold_trainer(
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
        logger=lightning_logger(config, folder.logs),
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


def lightning_logger(config: TrainConfig, logs: Path):
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


def fit_then_validate(
    trainer: pl.Trainer, task: FoldModule, loaders: FoldLoaders, ckpt: Path | None, validating: bool
) -> int:
    """Train (continuing from ``ckpt`` if it exists), then validate unless the last epoch was; the epochs finished."""
    trainer.fit(task, datamodule=loaders, ckpt_path=str(ckpt) if ckpt is not None and ckpt.is_file() else None)
    finished_epochs = trainer.current_epoch
    # Decided from the module's own state, which every DDP rank shares, never from a file rank 0 wrote:
    # a rank that validated alone would wait for the others forever.
    if validating and task.validated_epoch != finished_epochs - 1:  # the last epoch was not validated
        trainer.validate(task, datamodule=loaders, verbose=False)
    return finished_epochs


def prediction_table(rows: pd.DataFrame, probabilities: pd.DataFrame, fold: int | None) -> pd.DataFrame:
    """:func:`coronet.layout.predictions_table` from a validation pass's output (``index``, ``prob_<class>``...,
    ``rank``), checked to hold one prediction per row, in order; ``rank`` is the process that predicted it."""
    if len(probabilities) != len(rows) or not (probabilities["index"].to_numpy() == np.arange(len(rows))).all():
        raise RuntimeError(f"fold {fold}: {len(probabilities)} predictions for {len(rows)} validation images")
    columns = [c for c in probabilities.columns if c.startswith(PROB_PREFIX)]
    table = predictions_table(rows, probabilities[columns].to_numpy(), [c[len(PROB_PREFIX) :] for c in columns], fold)
    table["rank"] = probabilities["rank"].to_numpy()  # the process that predicted it (DDP)
    return table


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
