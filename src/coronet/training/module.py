"""The Lightning module that trains a CoroNet, and the pieces of its recipe: partial-label loss,
optimiser, learning-rate schedule, precision.

:class:`CoroNetModule` follows its :class:`coronet.training.profiles.TrainConfig` and nothing else:
batches of uint8 films are augmented, resized and scaled on the device
(:mod:`coronet.data.augment`); mixup/CutMix and label smoothing shape the loss; a weight
average (EMA) is kept beside the weights and is what validation predicts and what is saved;
test-time augmentation averages a film and its mirror. Everything stateful -- schedule, EMA,
optimiser -- lives in the Lightning checkpoint, so a resumed run ends bit-identical.

:class:`FeatureHeadModule` trains the head alone on a frozen backbone's precomputed features (the fast
fine-tune); both share :class:`FoldModule`'s optimiser, schedule, seeding, logging and validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from timm.utils.model_ema import ModelEmaV3

from ..data.augment import acquisition_batch, augment_batch, mix_batch, resize_batch
from ..layout import atomic_path, prob_column
from ..models.coronet import CoroNet, build_model, configure_batchnorm, set_trainable
from .adversary import SourceAdversary, ramp
from .profiles import TrainConfig


class FoldModule(pl.LightningModule):
    """What every fold's training shares, whatever it trains: the recipe's optimiser and per-step schedule over
    the trainable parameters, dropout seeded per step, the epoch's training loss and accuracy, and validation
    gathered over the ranks into per-image probabilities (written by rank 0 to ``predictions_path``).

    A subclass says what trains (:meth:`trainable_parameters`), how a validation batch becomes probabilities
    (:meth:`predict_probabilities`) and how a training step goes; validation batches end in
    ``(..., target, row index)``.
    """

    target_masks: torch.Tensor
    #: a validation batch's inputs (all but its last two entries) -> per-class probabilities
    predict_probabilities: Callable[..., torch.Tensor]

    def __init__(self, config: TrainConfig, predictions_path: Path | None, target_masks: np.ndarray | None):
        super().__init__()
        self.config, self.predictions_path = config, predictions_path
        # target k allows the classes marked in row k: one each for the classes, then partial labels
        masks = np.eye(len(config.classes), dtype=bool) if target_masks is None else target_masks
        self.register_buffer("target_masks", torch.as_tensor(masks), persistent=False)
        self._val_outputs: list[tuple[torch.Tensor, ...]] = []
        self.validated_epoch: int | None = None

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        raise NotImplementedError

    def configure_optimizers(self):
        config = self.config
        optimizer = make_optimizer(self.trainable_parameters(), config)
        if config.schedule == "constant" and not config.warmup:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": lr_schedule(optimizer, config, self.planned_steps), "interval": "step"},
        }

    @property
    def planned_steps(self) -> int:
        """Optimiser steps over the configured epochs, not this call's max_epochs (a run stopped early and
        resumed keeps its schedule)."""
        steps_per_epoch = int(self.trainer.estimated_stepping_batches) // max(1, self.trainer.max_epochs or 1)
        return max(1, steps_per_epoch * self.config.epochs)

    def seed_step(self) -> None:
        """Dropout draws from the global generator: seed it from (seed, step, rank), which a resumed run restores
        exactly (Lightning skips epoch-start hooks when it resumes at an epoch's end)."""
        torch.manual_seed(self.config.seed * 1_000_003 + self.global_step * 16 + self.global_rank)

    def log_training(self, loss: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """The epoch's ``train_loss`` and ``train_acc`` (a prediction is right when its target allows it)."""
        correct = self.target_masks[targets, logits.argmax(1)].float().mean()
        # logged as tensors and reduced at epoch end: no per-step host synchronisation
        self.log("train_loss", loss, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(targets))
        self.log("train_acc", correct, on_step=False, on_epoch=True, sync_dist=True, batch_size=len(targets))

    def validation_step(self, batch, _):
        *inputs, labels, index = batch
        probabilities = self.predict_probabilities(*inputs)
        rank = torch.full_like(index, self.global_rank)
        self._val_outputs.append((index.cpu(), labels.cpu(), probabilities.cpu(), rank.cpu()))

    def on_validation_epoch_end(self):
        # every rank records this itself, so all agree on whether the last epoch still needs validating
        self.validated_epoch = self.current_epoch
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
        masks = self.target_masks.cpu()
        loss = -torch.log((probabilities * masks[labels]).sum(1).clamp_min(1e-12)).mean().item()
        accuracy = masks[labels, probabilities.argmax(1)].float().mean().item()
        self.log_dict({"val_loss": loss, "val_acc": accuracy}, rank_zero_only=True)
        if self.global_rank == 0 and self.predictions_path is not None:
            # Written to disk by rank 0, so the launching process finds it whatever the strategy
            # (ddp_spawn runs validation in child processes).
            frame = pd.DataFrame(probabilities.numpy(), columns=[prob_column(c) for c in self.config.classes])
            frame.insert(0, "index", index.numpy())
            frame["rank"] = rank.numpy()
            frame["epoch"] = self.current_epoch + 1
            with atomic_path(self.predictions_path) as tmp:
                frame.to_csv(tmp, index=False)


class CoroNetModule(FoldModule):
    """Trains a CoroNet as its ``TrainConfig`` says; gathers per-image validation probabilities.

    Batches arrive as uint8 films and are augmented, resized and scaled on the device
    (:meth:`on_after_batch_transfer`). With ``config.ema`` a moving average of the weights is
    kept beside them (timm's ``ModelEmaV3``, part of the checkpoint): it is what validation
    predicts and what is saved. With ``config.tta`` validation averages the film and its mirror.
    """

    def __init__(
        self,
        config: TrainConfig,
        model: CoroNet | None = None,
        predictions_path: Path | None = None,
        target_masks: np.ndarray | None = None,
        sources: tuple[np.ndarray, np.ndarray] | None = None,
        sample_weights: np.ndarray | None = None,
    ):
        """sources: with ``config.source_adversary``, ``(source index of each training row, the
        :func:`coronet.training.adversary.source_pairs` of the training data)``. sample_weights: a loss
        weight per training row (``config.source_balance``, :func:`group_weights`)."""
        super().__init__(config, predictions_path, target_masks)
        if model is None:
            model = build_model(
                num_classes=len(config.classes),
                backbone=config.backbone,
                weights=config.weights,
                input_size=config.input_size,
                hidden=config.hidden,
                dropout=config.dropout,
                **config.normalisation,
                crop=config.crop,
                equalize=config.equalize,
            )
            configure_batchnorm(model, config.bn_momentum, zero_init_last=config.bn_zero_init)
        else:  # a trained network (fine-tuning) keeps its weights
            configure_batchnorm(model, config.bn_momentum)
        self.model = model
        set_trainable(self.model, config.train_layers)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward_model = torch.compile(self.model) if config.compile else self.model
        self.ema = None
        if config.ema:
            self.ema = ModelEmaV3(self.model, decay=config.ema, use_warmup=True, warmup_power=3 / 4)
            self.ema.requires_grad_(False)
        self.adversary: SourceAdversary | None = None
        if config.source_adversary and sources is not None and sources[1].any():
            row_sources, pairs = sources
            self.adversary = SourceAdversary(self.model.feature_shape[0], pairs)
            self.register_buffer("train_sources", torch.as_tensor(row_sources, dtype=torch.long), persistent=False)
        weights = None if sample_weights is None else torch.as_tensor(sample_weights)
        self.register_buffer("sample_weights", weights, persistent=False)

    @property
    def evaluated_model(self) -> CoroNet:
        """The network that is validated and saved: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.model  # type: ignore[return-value]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.forward_model(images)

    def freeze_backbone(self, frozen: bool) -> None:
        """``config.freeze_epochs``: no gradient reaches the backbone (Adam skips it) while ``frozen``. Decided
        per step from the epoch, so a resumed run freezes exactly as an uninterrupted one."""
        if self.config.train_layers == "all" and self.config.freeze_epochs:
            self.model.backbone.requires_grad_(not frozen)

    def predict_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Softmax of the evaluated network (and of the mirrored films, averaged, with TTA)."""
        net = self.evaluated_model if self.ema is not None else self.forward_model
        if self.config.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        probabilities = torch.softmax(net(images).float(), dim=1)
        if self.config.tta:
            probabilities = (probabilities + torch.softmax(net(images.flip(-1)).float(), dim=1)) / 2
        return probabilities

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        parameters = list(self.model.named_parameters())
        if self.adversary is not None:
            parameters += list(self.adversary.named_parameters())
        return parameters

    def on_train_start(self):
        self._steps = self.planned_steps  # read once: Lightning recomputes it on every access

    def on_train_epoch_start(self):
        # A frozen backbone also keeps its BatchNorm statistics (Lightning restores this mode after validation).
        if self.config.train_layers != "all":
            self.model.backbone.eval()

    def on_after_batch_transfer(self, batch, dataloader_idx):
        """uint8 films -> float [0, 1] on the device: augmented at the epoch's size when training."""
        images, labels, index, seeds = batch
        images = images.float().div_(255)
        config = self.config
        if self.trainer is not None and self.trainer.training:
            size = config.train_size(self.current_epoch)
            images = acquisition_batch(images, seeds, **config.acquisition)
            if config.augment:
                images = augment_batch(
                    images,
                    seeds,
                    size,
                    rotation=config.rotation,
                    shift=config.shift,
                    shear=config.shear,
                    zoom=config.zoom,
                    hflip=config.hflip,
                    vflip=config.vflip,
                    brightness=config.brightness,
                    contrast=config.contrast,
                )
            else:
                images = resize_batch(images, size)
        else:
            images = resize_batch(images, config.input_size)
        return images, labels, index

    def training_step(self, batch, _):
        self.seed_step()
        self.freeze_backbone(self.current_epoch < self.config.freeze_epochs)
        images, labels, index = batch
        images, labels_a, labels_b, lam = mix_batch(
            images,
            labels,
            (self.config.seed, self.global_step, self.global_rank),
            mixup=self.config.mixup,
            cutmix=self.config.cutmix,
        )
        if self.adversary is None:
            logits = self(images)
        else:
            if self.config.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            features = self.model.forward_features(images)
            logits = self.model.forward_head(features)
        smoothing, masks = self.config.label_smoothing, self.target_masks
        weights = None if self.sample_weights is None else self.sample_weights[index]  # with mixing: the first film's
        loss = partial_label_loss(logits, labels_a, masks, smoothing, weights)
        if lam < 1:
            loss = lam * loss + (1 - lam) * partial_label_loss(logits, labels_b, masks, smoothing, weights)
        if self.adversary is not None:  # with mixing: the first film's label and source
            weight = self.config.source_adversary * ramp(self.global_step / self._steps)
            adversary_loss, source_acc = self.adversary.loss(features, labels_a, self.train_sources[index], weight)
            loss = loss + adversary_loss
            if source_acc is not None:
                self.log("train_source_acc", source_acc, on_step=False, on_epoch=True, batch_size=len(labels))
        self.log_training(loss, logits, labels_a)
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)


class FeatureHeadModule(FoldModule):
    """Trains a CoroNet's head alone on features its frozen backbone computed once (``fit_head_on_features``).

    Batches come from a ``TensorDataset``: ``(flattened features, target, row index)`` for training and, with
    ``config.tta``, ``(features, mirror features, target, row index)`` for validation, which then averages the
    softmax of the two as :class:`CoroNetModule` does. Only ``head`` (``model.head``, with the parameters
    ``config.train_layers`` leaves trainable) is part of the module and its checkpoint; EMA and mixing do not
    apply. Training, schedule, logging and validation are :class:`FoldModule`'s.
    """

    def __init__(
        self,
        config: TrainConfig,
        head: torch.nn.Module,
        predictions_path: Path | None = None,
        target_masks: np.ndarray | None = None,
    ):
        super().__init__(config, predictions_path, target_masks)
        self.head = head.train()  # computing the features put the whole network in eval mode (dropout off)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def trainable_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return list(self.head.named_parameters())

    def predict_probabilities(self, features: torch.Tensor, mirrored: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax of the head (and of the mirror images' features, averaged, with TTA)."""
        probabilities = torch.softmax(self.head(features).float(), dim=1)
        if mirrored is not None:
            probabilities = (probabilities + torch.softmax(self.head(mirrored).float(), dim=1)) / 2
        return probabilities

    def training_step(self, batch, _):
        self.seed_step()
        features, targets, _index = batch
        logits = self.head(features)
        loss = partial_label_loss(logits, targets, self.target_masks, self.config.label_smoothing)
        self.log_training(loss, logits, targets)
        return loss


def partial_label_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    masks: torch.Tensor,
    label_smoothing: float = 0.0,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy that also takes partial labels: ``-log(sum of the allowed classes' probabilities)``.

    targets: (N,) target indices; ``masks[t]`` marks the classes target ``t`` allows (one for an
    ordinary label: then this is exactly ``F.cross_entropy``, label smoothing included).
    label_smoothing: ``(1 - e) * that + e * mean over classes of -log p``, PyTorch's definition.
    weights: (N,) per-film weights; the loss is then the mean of ``weight * loss``.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    allowed = masks[targets]
    loss = -torch.logsumexp(log_p.masked_fill(~allowed, float("-inf")), dim=1)
    if label_smoothing:
        loss = (1 - label_smoothing) * loss - label_smoothing * log_p.mean(dim=1)
    return (loss if weights is None else loss * weights).mean()


def group_weights(groups, exponent: float) -> np.ndarray:
    """Per-film loss weights that balance groups (e.g. (source, label) pairs): ``count ** -exponent``, scaled to
    mean 1 over the films. ``exponent`` 0: all 1; 1: every group weighs the same in total."""
    codes, _ = pd.factorize(pd.Series(list(groups)))
    counts = np.bincount(codes)
    weights = counts[codes].astype(np.float64) ** -float(exponent)
    return (weights / weights.mean()).astype(np.float32)


def make_optimizer(named_parameters, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam or AdamW over the trainable parameters; no weight decay on norms and biases ("Bag of Tricks").

    With ``config.backbone_lr`` other than 1, the backbone's parameters (names ``backbone.*``) learn at
    ``lr * backbone_lr``, in groups of their own (otherwise two groups, as checkpoints of earlier runs hold).
    """
    trainable = [(name, p) for name, p in named_parameters if p.requires_grad]
    parts = [(config.lr, trainable)]
    if config.backbone_lr != 1.0:
        backbone = [(n, p) for n, p in trainable if n.startswith("backbone.")]
        rest = [(n, p) for n, p in trainable if not n.startswith("backbone.")]
        parts = [(config.lr * config.backbone_lr, backbone), (config.lr, rest)]
    groups = [
        {"params": [p for _, p in params if (p.ndim > 1) == decayed], "lr": lr, "weight_decay": decay}
        for lr, params in parts
        for decayed, decay in ((True, config.weight_decay), (False, 0.0))
    ]
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel for all 34M parameters (measured faster than foreach on the CPU)
    return optimizer_class([g for g in groups if g["params"]], lr=config.lr, fused=True)


def lr_schedule(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: int):
    """The per-step learning-rate schedule ``config.schedule`` over ``total_steps``, with linear warm-up.

    onecycle: PyTorch's ``OneCycleLR`` (warm-up from lr/25 over ``warmup`` of the steps, cosine
    annealing to lr/25e4, Adam's beta1 cycled 0.95 -> 0.85 -> 0.95); cosine: linear warm-up
    from 0, then cosine to 0; constant: linear warm-up, then ``lr``.
    """
    warm = int(round(config.warmup * total_steps))
    if config.schedule == "onecycle" and total_steps >= 4:  # (shorter runs, e.g. tests: the cosine below)
        pct_start = min(max(config.warmup, 2 / total_steps), 1 - 2 / total_steps)
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=[group["lr"] for group in optimizer.param_groups],
            total_steps=total_steps,
            pct_start=pct_start,
            anneal_strategy="cos",
        )

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if config.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total_steps - warm)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); without, bf16 autocast is ~20x slower."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name)() for name in probes if hasattr(torch.cpu, name))


def resolve_precision(config: TrainConfig) -> str:
    """``auto``: bf16-mixed on a GPU that supports it or a CPU with native bf16, else 32-bit.

    On a CPU without bf16 instructions (AVX2 only) bf16 autocast measured about 20x slower
    than fp32, so it is never chosen there.
    """
    if config.precision != "auto":
        return config.precision
    on_gpu = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if on_gpu:
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def describe_precision(config: TrainConfig) -> str:
    """One line: the precision used and why (printed when training starts)."""
    chosen = resolve_precision(config)
    if config.precision != "auto":
        return f"precision: {chosen} (as set)"
    on_gpu = config.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    where = (
        f"GPU {torch.cuda.get_device_name(0)}"
        if on_gpu
        else "CPU with native bf16"
        if cpu_has_native_bf16()
        else "CPU without native bf16 (AVX2 or older)"
    )
    return f"precision: {chosen} (auto: {where})"


__all__ = [
    "CoroNetModule",
    "FeatureHeadModule",
    "FoldModule",
    "cpu_has_native_bf16",
    "describe_precision",
    "group_weights",
    "lr_schedule",
    "make_optimizer",
    "partial_label_loss",
    "resolve_precision",
]
