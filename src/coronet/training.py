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
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.utils.data import DataLoader

from . import __version__
from .data import CachedXrays, EpochShuffleSampler, ShardSampler, stratified_subset, train_transform
from .model import build_model, count_parameters, set_trainable
from .modelio import file_sha256, save_model_dir
from .prepare import load_cache
from .profiles import TrainConfig

LAST_CHECKPOINT = "last.ckpt"


# --------------------------------------------------------------------------- Lightning pieces
class CoroNetTask(pl.LightningModule):
    """Cross-entropy training of a CoroNet with Adam; gathers per-image validation probabilities."""

    def __init__(self, config: TrainConfig, model: torch.nn.Module | None = None,
                 predictions_path: Path | None = None):
        super().__init__()
        self.config, self.predictions_path = config, predictions_path
        self.model = model if model is not None else build_model(
            num_classes=len(config.classes), backbone=config.backbone, weights=config.weights,
            input_size=config.input_size, hidden=config.hidden, dropout=config.dropout)
        set_trainable(self.model, config.train_layers)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model = torch.compile(self.model) if config.compile else self.model
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.forward_model(images)

    def configure_optimizers(self):
        # fused Adam: one kernel for all 34M parameters (measured faster than foreach on the CPU)
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(trainable, lr=self.config.lr, fused=True)

    def on_train_epoch_start(self):
        # A frozen backbone also keeps its BatchNorm statistics (Lightning restores this mode after validation).
        if self.config.train_layers != "all":
            self.model.backbone.eval()

    def training_step(self, batch, _):
        # Dropout draws from the global generator: seed it from (seed, step, rank), which a resumed
        # run restores exactly (Lightning skips epoch-start hooks when it resumes at an epoch's end).
        torch.manual_seed(self.config.seed * 1_000_003 + self.global_step * 16 + self.global_rank)
        images, labels, _ = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels)
        correct = (logits.argmax(1) == labels).float().mean()
        # logged as tensors and reduced at epoch end: no per-step host synchronisation
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(labels))
        self.log("train_acc", correct, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(labels))
        return loss

    def validation_step(self, batch, _):
        images, labels, index = batch
        probabilities = torch.softmax(self(images).float(), dim=1)
        rank = torch.full_like(index, self.global_rank)
        self._val_outputs.append((index.cpu(), labels.cpu(), probabilities.cpu(), rank.cpu()))

    def on_validation_epoch_end(self):
        local = [torch.cat(parts) for parts in zip(*self._val_outputs)] if self._val_outputs else None
        self._val_outputs = []
        gathered = [local]
        if self.trainer.world_size > 1:
            gathered = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, local)
        gathered = [g for g in gathered if g is not None]
        index, labels, probabilities, rank = (torch.cat(parts) for parts in zip(*gathered))
        order = torch.argsort(index)
        index, labels, probabilities, rank = index[order], labels[order], probabilities[order], rank[order]
        loss = F.nll_loss(torch.log(probabilities.clamp_min(1e-12)), labels).item()
        accuracy = (probabilities.argmax(1) == labels).float().mean().item()
        self.log_dict({"val_loss": loss, "val_acc": accuracy}, rank_zero_only=True)
        if self.global_rank == 0 and self.predictions_path is not None:
            # Written to disk by rank 0, so the launching process finds it whatever the strategy
            # (ddp_spawn runs validation in child processes).
            frame = pd.DataFrame(probabilities.numpy(), columns=[f"prob_{c}" for c in self.config.classes])
            frame.insert(0, "index", index.numpy())
            frame["rank"] = rank.numpy()
            frame["epoch"] = self.current_epoch + 1
            tmp = self.predictions_path.with_name(self.predictions_path.name + ".tmp")
            frame.to_csv(tmp, index=False)
            os.replace(tmp, self.predictions_path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a temporary file and renamed (never half-written); loaded with weights_only."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


class EpochLog(Callback):
    """Appends one row per epoch to ``metrics.csv`` (kept across resumes) and redraws ``curves.png``."""

    FIELDS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "train_images_per_s"]

    def __init__(self, fold_dir: Path, train_images: int):
        self.path, self.fold_dir, self.train_images = fold_dir / "metrics.csv", fold_dir, train_images
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
        }
        rows = [r for r in _read_rows(self.path) if int(r["epoch"]) < row["epoch"]] + [row]
        with open(self.path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        plot_curves(self.path, self.fold_dir / "curves.png")


def _number(value) -> float | str:
    return "" if value is None else round(float(value), 6)


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def plot_curves(metrics_csv: Path, out: Path) -> None:
    """Training/validation accuracy and loss per epoch (the paper's Fig. 4)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = pd.read_csv(metrics_csv)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for axis, name in zip(axes, ("acc", "loss")):
        axis.plot(table.epoch, table[f"train_{name}"], "o-", label="training")
        validated = table.dropna(subset=[f"val_{name}"])
        axis.plot(validated.epoch, validated[f"val_{name}"], "s-", label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel("accuracy" if name == "acc" else "cross-entropy loss")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(metrics_csv.parent.name)
    figure.tight_layout()
    tmp = out.with_name(out.stem + ".tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, out)


# --------------------------------------------------------------------------- one fold
@dataclass
class FoldResult:
    fold: int
    accuracy: float
    predictions: pd.DataFrame
    directory: Path
    train_images_per_s: float | None


def resolve_precision(config: TrainConfig) -> str:
    """``auto``: bf16-mixed on GPUs that support it; 32-bit elsewhere (the 2-core AVX2 CPU has no bf16
    instructions, and bf16 autocast there measured 20x slower)."""
    if config.precision != "auto":
        return config.precision
    if config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def dataset_hash(dataset_dir: Path) -> str:
    return file_sha256(Path(dataset_dir) / "manifest.csv")


def load_manifest(dataset_dir: Path, classes, manifest: pd.DataFrame | None = None) -> pd.DataFrame:
    """The dataset's manifest (or the given one), checked to hold only labels among ``classes``."""
    if manifest is None:
        manifest = pd.read_csv(Path(dataset_dir) / "manifest.csv")
    unknown = sorted(set(manifest.label) - set(classes))
    if unknown:
        raise ValueError(f"{dataset_dir}: labels {unknown} are not among the model's classes {list(classes)}")
    return manifest


def _devices(value: str):
    value = str(value)
    if value == "auto" or value.startswith("[") or "," in value:
        return value if value == "auto" else [int(v) for v in value.strip("[]").split(",") if v != ""]
    return int(value)


def fit_fold(dataset_dir: str | os.PathLike, fold: int, out: str | os.PathLike, config: TrainConfig,
             resume: bool = False, max_epochs: int | None = None, progress: bool = True,
             model: torch.nn.Module | None = None, manifest: pd.DataFrame | None = None,
             card: dict | None = None) -> FoldResult:
    """Train on every fold but ``fold``, validate on ``fold``, write the fold directory ``out``.

    resume: continue from ``out/checkpoints/last.ckpt`` when it exists.
    max_epochs: stop after this many epochs (default ``config.epochs``); a later call with
        ``resume=True`` continues exactly where it stopped.
    model: start from this network instead of building one from ``config`` (fine-tuning).
    manifest: use these rows (e.g. relabelled for another task) instead of the dataset's manifest.csv;
        ``cache_index`` still points into the dataset's image cache.
    card: extra entries for the model card (e.g. where a fine-tuned model came from).
    """
    dataset_dir, out = Path(dataset_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    torch.set_float32_matmul_precision("high")

    manifest = load_manifest(dataset_dir, config.classes, manifest)
    class_index = {c: k for k, c in enumerate(config.classes)}
    cache = load_cache(dataset_dir, _cache_size(dataset_dir, config.input_size))
    train_rows = stratified_subset(manifest[manifest.fold != fold], config.train_per_class, config.seed)
    val_rows = manifest[manifest.fold == fold]
    if train_rows.empty or val_rows.empty:
        raise ValueError(f"fold {fold}: empty training or validation part (folds: {sorted(manifest.fold.unique())})")

    train_set = CachedXrays(cache, train_rows.cache_index, train_rows.label.map(class_index), config.input_size,
                            transform=train_transform(config) if config.augment else None, seed=config.seed)
    val_set = CachedXrays(cache, val_rows.cache_index, val_rows.label.map(class_index), config.input_size)

    raw_predictions = out / "val-outputs.csv"
    raw_predictions.unlink(missing_ok=True)
    task = CoroNetTask(config, model=model, predictions_path=raw_predictions)
    checkpoints = out / "checkpoints"
    epochs = config.epochs if max_epochs is None else min(max_epochs, config.epochs)
    validate_every = max(1, min(config.val_every, epochs))
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=config.accelerator,
        devices=_devices(config.devices),
        strategy=config.strategy,
        precision=resolve_precision(config),
        deterministic=True,
        use_distributed_sampler=False,  # our samplers shard by rank themselves
        check_val_every_n_epoch=validate_every,
        num_sanity_val_steps=0,
        logger=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        default_root_dir=str(out),
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            ModelCheckpoint(dirpath=checkpoints, filename="epoch-{epoch}", save_last=True, save_top_k=0,
                            every_n_epochs=1, save_on_train_epoch_end=True),
            EpochLog(out, len(train_set)),
            *([TQDMProgressBar(refresh_rate=5)] if progress else []),
        ],
    )
    ckpt = checkpoints / LAST_CHECKPOINT
    loaders = _Loaders(train_set, val_set, config)
    trainer.fit(task, datamodule=loaders, ckpt_path=str(ckpt) if resume and ckpt.is_file() else None)
    finished_epochs = trainer.current_epoch
    if not raw_predictions.is_file() or epochs % validate_every:  # the last epoch was not validated
        trainer.validate(task, datamodule=loaders, verbose=False)
    if not trainer.is_global_zero:
        return FoldResult(fold, float("nan"), pd.DataFrame(), out, None)

    predictions = _prediction_table(val_rows, pd.read_csv(raw_predictions), fold)
    predictions.to_csv(out / "predictions.csv", index=False)
    raw_predictions.unlink()
    accuracy = float((predictions.pred == predictions.label).mean())
    epoch_rows = _read_rows(out / "metrics.csv")
    speed = float(epoch_rows[-1]["train_images_per_s"]) if epoch_rows else None
    if finished_epochs >= config.epochs:  # finished: write the model directory
        save_model_dir(task.model.to(memory_format=torch.contiguous_format), out / "model",
                       classes=config.classes, backbone=config.backbone, input_size=config.input_size,
                       hidden=config.hidden, dropout=config.dropout, extra={
                           "name": f"coronet-{config.backbone}-fold{fold}",
                           "training": {"dataset_sha256": dataset_hash(dataset_dir), "fold": fold,
                                        "train_images": len(train_set), "epochs": config.epochs,
                                        "initial_weights": config.weights, "config": config.to_dict()},
                           "metrics": {"val_accuracy": accuracy, "val_images": len(val_set)},
                           "parameters": count_parameters(task.model),
                           **(card or {}),
                       })
        if not config.keep_checkpoint:
            ckpt.unlink(missing_ok=True)
    return FoldResult(fold, accuracy, predictions, out, speed)


def _cache_size(dataset_dir: Path, input_size: int) -> int:
    """Use the cache of the model's input size if the dataset has one, else the dataset's own size."""
    if (Path(dataset_dir) / f"images-{input_size}.npy").is_file():
        return input_size
    return json.loads((Path(dataset_dir) / "prepare.json").read_text())["config"]["image_size"]


class _Loaders(pl.LightningDataModule):
    """Builds the loaders inside each process, so samplers know their rank (DDP)."""

    def __init__(self, train_set: CachedXrays, val_set: CachedXrays, config: TrainConfig):
        super().__init__()
        self.train_set, self.val_set, self.config = train_set, val_set, config

    def _loader(self, dataset, sampler, batch_size):
        workers = self.config.num_workers
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self):
        world, rank = self.trainer.world_size, self.trainer.global_rank
        sampler = EpochShuffleSampler(len(self.train_set), self.config.seed, world, rank)
        return self._loader(self.train_set, sampler, self.config.batch_size)

    def val_dataloader(self):
        world, rank = self.trainer.world_size, self.trainer.global_rank
        return self._loader(self.val_set, ShardSampler(len(self.val_set), world, rank),
                            max(32, self.config.batch_size))


def _prediction_table(rows: pd.DataFrame, probabilities: pd.DataFrame, fold: int) -> pd.DataFrame:
    rows = rows.reset_index(drop=True)
    if len(probabilities) != len(rows) or not (probabilities["index"].to_numpy() == np.arange(len(rows))).all():
        raise RuntimeError(f"fold {fold}: {len(probabilities)} predictions for {len(rows)} validation images")
    table = rows[["path", "patient_id"]].copy()
    table["fold"] = fold
    table["label"] = rows.label
    prob_columns = [c for c in probabilities.columns if c.startswith("prob_")]
    for column in prob_columns:
        table[column] = probabilities[column].round(6).to_numpy()
    table["pred"] = [c[len("prob_"):] for c in probabilities[prob_columns].idxmax(axis=1)]
    for extra in ("source", "relpath", "source_label", "overlap", "overlap_kind"):
        if extra in rows:
            table[extra] = rows[extra]
    table["rank"] = probabilities["rank"].to_numpy()  # the process that predicted it (DDP)
    return table


# --------------------------------------------------------------------------- cross-validation
def run_cv(dataset_dir: str | os.PathLike, out: str | os.PathLike, config: TrainConfig, profile: str = "custom",
           folds: list[int] | None = None, resume: bool = False, progress: bool = True, log=print,
           manifest: pd.DataFrame | None = None, initial_model: Callable[[int], torch.nn.Module] | None = None,
           record: dict | None = None) -> pd.DataFrame:
    """Train and evaluate every fold (or ``folds``) of the prepared dataset into one run directory.

    Finished folds (with a model directory) are kept when ``resume`` is set; an interrupted fold
    continues from its last checkpoint. Returns the combined per-image predictions.

    manifest: the rows to use instead of the dataset's own manifest (a relabelled task).
    initial_model: fold -> the network that fold starts from (fine-tuning); default: a new one.
    record: extra entries for the run's ``config.json`` (e.g. the task and the source run).
    """
    dataset_dir, out = Path(dataset_dir), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest(dataset_dir, config.classes, manifest)
    all_folds = sorted(int(f) for f in manifest.fold.unique())
    folds = folds or all_folds
    missing = sorted(set(folds) - set(all_folds))
    if missing:
        raise ValueError(f"folds {missing} not in the dataset (it has {all_folds})")
    _write_run_config(out, dataset_dir, config, profile, folds, record)
    manifest.to_csv(out / "manifest.csv", index=False)
    for name in ("prepare.json", "summary.md", "duplicates.csv"):
        if (dataset_dir / name).is_file():
            shutil.copy2(dataset_dir / name, out / f"dataset-{name}")

    results = []
    for fold in folds:
        fold_dir = out / f"fold-{fold}"
        if resume and (fold_dir / "model" / "model.json").is_file() and (fold_dir / "predictions.csv").is_file():
            predictions = pd.read_csv(fold_dir / "predictions.csv")
            log(f"fold {fold}: already finished, kept")
        else:
            started = time.perf_counter()
            model = initial_model(fold) if initial_model is not None else None
            card = (record or {}).get("card")
            result = fit_fold(dataset_dir, fold, fold_dir, config, resume=resume, progress=progress, model=model,
                              manifest=manifest, card=card)
            predictions = result.predictions
            log(f"fold {fold}: accuracy {result.accuracy:.4f} on {len(predictions)} images "
                f"({time.perf_counter() - started:.0f} s, {result.train_images_per_s or float('nan'):.1f} train images/s)")
        results.append(predictions)
    combined = pd.concat(results, ignore_index=True)
    combined.to_csv(out / "predictions.csv", index=False)
    summary = fold_summary(combined)
    (out / "results.md").write_text(summary)
    log(summary)
    return combined


def fold_summary(predictions: pd.DataFrame) -> str:
    """Markdown: accuracy per fold and the mean, from per-image predictions."""
    lines = ["| fold | images | accuracy (%) |", "|---|---|---|"]
    accuracies = []
    for fold, rows in predictions.groupby("fold"):
        accuracy = float((rows.pred == rows.label).mean())
        accuracies.append(accuracy)
        lines.append(f"| {fold} | {len(rows)} | {100 * accuracy:.2f} |")
    overall = float((predictions.pred == predictions.label).mean())
    lines.append(f"| mean of folds | {len(predictions)} | {100 * float(np.mean(accuracies)):.2f} |")
    lines.append(f"| pooled | {len(predictions)} | {100 * overall:.2f} |")
    return "\n".join(lines) + "\n"


def _write_run_config(out: Path, dataset_dir: Path, config: TrainConfig, profile: str, folds: list[int],
                      extra: dict | None = None) -> None:
    record = {
        "profile": profile,
        "train": config.to_dict(),
        "precision_resolved": resolve_precision(config),
        "folds": folds,
        "dataset": {"path": str(dataset_dir.resolve()), "manifest_sha256": dataset_hash(dataset_dir)},
        "versions": {"coronet": __version__, "torch": torch.__version__, "lightning": pl.__version__,
                     "python": platform.python_version()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        **(extra or {}),
    }
    record = json.loads(json.dumps(record))  # tuples -> lists, as they will be read back
    path = out / "config.json"
    if path.is_file():
        previous = json.loads(path.read_text())
        if previous.get("train") != record["train"] or previous["dataset"] != record["dataset"]:
            raise ValueError(f"{out}: holds a run with other settings or data; use a new --out")
    path.write_text(json.dumps(record, indent=2) + "\n")


__all__ = ["CoroNetTask", "FoldResult", "fit_fold", "fold_summary", "plot_curves", "run_cv"]
