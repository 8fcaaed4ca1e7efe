"""What a fold's Trainer writes and shows beside training: atomic checkpoints, ``metrics.csv`` and ``curves.png``
after every epoch, and one progress bar over every fold of a run."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..layout import FoldDir, RunDir, atomic_path
from .curves import plot_curves


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
        rows = [r for r in read_rows(self.folder.metrics) if int(r["epoch"]) < row["epoch"]] + [row]
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


def read_rows(path: Path) -> list[dict]:
    """The rows of ``metrics.csv`` at ``path`` (none when there is no file yet)."""
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


class OverallProgress(Callback):
    """Advances one progress bar over every fold's training images (its ETA is the whole run's)."""

    def __init__(self, bar, fold: int):
        self.bar, self.fold = bar, fold

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.is_global_zero:
            self.bar.set_description(f"fold {self.fold}, epoch {trainer.current_epoch + 1}", refresh=False)
            self.bar.update(len(batch[1]) * trainer.world_size)


def overall_bar(run: RunDir, images: dict[int, int], epochs: int, finished: set[int]):
    """A tqdm bar over the training images (``images``: fold -> its training images) of ``epochs`` epochs of every
    fold; work already done (the ``finished`` folds, the epochs in an unfinished fold's metrics) counts as done."""
    from tqdm.auto import tqdm

    total = done = 0
    for fold, count in images.items():
        total += count * epochs
        epochs_done = epochs if fold in finished else len(read_rows(run.fold(fold).metrics))
        done += count * min(epochs_done, epochs)
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
