"""Training settings as plain data: one dataclass, named profiles, explicit overrides."""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, fields, replace

OPTIMIZERS = ("adam", "adamw")
#: The settings that say how a run is carried out, not what it learns (Lightning's Trainer arguments, the
#: checkpoint cadence): a run may be resumed with others -- started on a CPU, continued on a GPU.
RUNTIME_FIELDS = (
    "precision",
    "accelerator",
    "devices",
    "strategy",
    "num_workers",
    "channels_last",
    "compile",
    "keep_checkpoint",
    "checkpoint_every",
    "logger",
)
LOGGERS = ("none", "csv", "tensorboard")


class _NotGiven:
    """The value of a setting nobody set (``None`` is a value: "no limit", "all images")."""

    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN = _NotGiven()
SCHEDULES = ("constant", "onecycle", "cosine")
#: input_scale -> (mean, std): the network computes (film in [0, 1] - mean) / std
INPUT_SCALES = {"unit": (0.0, 1.0), "symmetric": (0.5, 0.5)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how one model is trained (defaults: the paper's settings)."""

    backbone: str = "legacy_xception"  # from ImageNet an Xception runs as keras_xception (coronet.models.imagenet)
    weights: str = "none"  # none | imagenet | PATH
    input_size: int = 150
    input_scale: str = "unit"  # unit: pixels / 255, as the paper's notebook; symmetric: [-1, 1], as Keras's
    #                            xception.preprocess_input (what its ImageNet weights were trained on)
    dropout: float = 0.5
    hidden: int = 256
    epochs: int = 80
    batch_size: int = 10
    seed: int = 0
    # -- optimisation
    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-4  # the peak learning rate under a schedule
    backbone_lr: float = 1.0  # the backbone's learning rate as a fraction of lr (the head's)
    freeze_epochs: int = 0  # the backbone is frozen for the first N epochs: only the head learns
    weight_decay: float = 0.0  # never applied to norms and biases
    schedule: str = "constant"  # constant | onecycle | cosine (per step)
    warmup: float = 0.0  # fraction of all steps spent warming up linearly (onecycle: its pct_start)
    label_smoothing: float = 0.0
    ema: float = 0.0  # decay of an exponential moving average of the weights (0: off);
    #                                      the average is what is validated and saved
    bn_momentum: float = 0.1  # BatchNorm running-statistics momentum (PyTorch convention)
    bn_zero_init: bool = False  # last BatchNorm of each residual branch starts at 0 (identity blocks)
    # -- evaluation
    tta: bool = False  # average the softmax of the film and its mirror image (also in predict)
    # -- runtime
    precision: str = "auto"  # auto | 32 | bf16-mixed | 16-mixed (auto: bf16 where the hardware has it)
    channels_last: bool = True
    compile: bool = False  # torch.compile: no gain measured on the 2-core CPU (benchmarks/)
    # -- augmentation (batched, coronet.augment). The defaults are the authors' Keras ImageDataGenerator.
    augment: bool = True
    rotation: float = 50.0  # degrees
    shift: float = 0.2  # fraction of width/height
    shear: float = 0.25  # degrees (Keras' shear_range is an angle in degrees)
    zoom: float = 0.1  # scale in [1 - zoom, 1 + zoom]
    hflip: bool = True
    vflip: bool = True
    brightness: float = 0.15  # in place of Keras' channel_shift_range=20 (of 255)
    contrast: float = 0.0
    mixup: float = 0.0  # Beta(a, a) parameter (0: off)
    cutmix: float = 0.0  # Beta(a, a) parameter (0: off); with mixup, one of the two per batch
    train_sizes: tuple[int, ...] = ()  # progressive resizing: the training resolution of the first epochs,
    #                                      one entry each; later epochs (and every evaluation) use input_size
    # -- levers against acquisition shortcuts (docs/RECIPES.md). crop and equalize are part of the network
    #    (coronet.models.preprocess): training, predict, export, serve and Grad-CAM apply them alike.
    crop: str = "none"  # none | lungs (the audit's lung box) | X0,Y0,X1,Y1 fractions of the square film
    equalize: bool = False  # per-film histogram equalisation
    gamma: float = 0.0  # acquisition augmentation (coronet.data.augment.acquisition_batch), each applied to
    blur: float = 0.0  # half the films at a random strength up to: gamma in [1/(1+g), 1+g]; Gaussian blur
    noise: float = 0.0  # sigma up to `blur` px; Gaussian noise std up to `noise`; JPEG re-compression at a
    jpeg: int = 0  # quality in [jpeg, 95] (0: off); down-and-up resampling to a scale in [1 - resample, 1]
    resample: float = 0.0
    source_adversary: float = 0.0  # weight of a gradient-reversal head predicting a film's source from the
    #                                pooled features, per label (labels with one source do not contribute)
    source_balance: float = 0.0  # loss weights count ** -x per (source, label) group of the training films:
    #                              0 off, 1 every group weighs the same (ieee8023's few non-COVID films count)
    # -- data and loop
    train_per_class: int | None = None  # stratified subset of each fold's training part (quick runs)
    leave_out: str | None = None  # a source (the manifest's `source`: cohen, radiography, actualmed ...) no fold
    #                               trains or validates on; its films are tested apart (coronet.data.leaveout)
    val_every: int = 1  # validate every N epochs (the last epoch always)
    accelerator: str = "auto"
    devices: str = "1"  # Lightning devices: "1", "2", "auto", "0,1"
    strategy: str = "auto"  # auto | ddp | ddp_spawn ...
    num_workers: int = 0  # the 2-core CPU trains fastest with augmentation in-process
    train_layers: str = "all"  # all | head | classifier: what fine-tuning updates (the rest is frozen)
    head_on_features: bool = False  # with a frozen backbone: compute its features once, train the head on them
    keep_checkpoint: bool = True  # keep last.ckpt (~400 MB for CoroNet) once the fold has finished
    checkpoint_every: int = 1  # write last.ckpt every N epochs (a resumed run continues from the last one written)
    logger: str = (
        "none"  # none | csv | tensorboard: Lightning's logger too, in FOLD/logs/ (metrics.csv is always written)
    )
    classes: tuple[str, ...] = ("covid", "normal", "bacterial", "viral")

    def __post_init__(self):
        choices = {
            "optimizer": OPTIMIZERS,
            "schedule": SCHEDULES,
            "train_layers": ("all", "head", "classifier"),
            "logger": LOGGERS,
            "input_scale": tuple(INPUT_SCALES),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {getattr(self, name)!r}")
        if not 0 <= self.warmup < 1 or not 0 <= self.ema < 1 or not 0 <= self.label_smoothing < 1:
            raise ValueError("warmup, ema and label_smoothing must lie in [0, 1)")
        from ..models.preprocess import parse_crop

        parse_crop(self.crop)  # a one-line ValueError for a malformed box
        if not 0 <= self.resample < 1 or not 0 <= self.jpeg <= 95 or min(self.gamma, self.blur, self.noise) < 0:
            raise ValueError("resample must lie in [0, 1), jpeg in [0, 95], gamma, blur and noise be >= 0")
        if self.backbone_lr < 0 or not 0 <= self.freeze_epochs <= self.epochs:
            raise ValueError("backbone_lr must be >= 0 and freeze_epochs lie between 0 and epochs")
        if self.weights == "imagenet":
            from ..models.imagenet import imagenet_backbone

            # ImageNet Xceptions were trained in Keras: run them as Keras computes them (recorded as such)
            object.__setattr__(self, "backbone", imagenet_backbone(self.backbone))
        if self.checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        if self.source_adversary < 0 or not 0 <= self.source_balance <= 1:
            raise ValueError("source_adversary must be >= 0 and source_balance lie in [0, 1]")
        if any(size < 16 or size > self.input_size for size in self.train_sizes):
            raise ValueError(
                f"train_sizes must lie between 16 and input_size ({self.input_size}): {list(self.train_sizes)}"
            )

    @property
    def acquisition(self) -> dict:
        """The acquisition augmentation's settings (:func:`coronet.data.augment.acquisition_batch`)."""
        return {
            "gamma": self.gamma,
            "blur": self.blur,
            "noise": self.noise,
            "jpeg": self.jpeg,
            "resample": self.resample,
        }

    @property
    def normalisation(self) -> dict[str, float]:
        """The network's input scaling: ``(film - mean) / std`` of a film in [0, 1]."""
        mean, std = INPUT_SCALES[self.input_scale]
        return {"mean": mean, "std": std}

    def train_size(self, epoch: int) -> int:
        """The training resolution of ``epoch`` (0-based): progressive resizing, else ``input_size``."""
        return self.train_sizes[epoch] if epoch < len(self.train_sizes) else self.input_size

    def with_overrides(self, **changes) -> TrainConfig:
        """A copy with ``changes`` applied, ``None`` included (a setting not to change is not passed;
        :data:`NOT_GIVEN` is also skipped); unknown keys are an error."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        return replace(self, **{k: v for k, v in changes.items() if v is not NOT_GIVEN})

    def to_dict(self) -> dict:
        return asdict(self)

    def recipe(self) -> dict:
        """The settings that decide what is learnt: everything but :data:`RUNTIME_FIELDS`."""
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_FIELDS}

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """The settings recorded in a ``config.json`` (or a model card); unknown keys are ignored."""
        data = dict(data)
        if "flips" in data:  # before 0.2 one switch turned on both flips
            data.setdefault("hflip", data["flips"])
            data.setdefault("vflip", data["flips"])
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("classes", "train_sizes"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


PROFILES: dict[str, TrainConfig] = {
    # Khan et al.: ImageNet weights, Adam 1e-4, batch 10, 80 epochs, 150x150, dropout 0.5, the notebook's
    # augmentation. Offline, --weights none (from scratch) or --weights PATH.
    "paper": TrainConfig(weights="imagenet"),
    # The same code on a stratified subset of each training part (all validation images are still
    # predicted), few epochs: about 9 minutes for 4 folds on a 2-core CPU. Not a result; a smoke run.
    # lr 1e-3: with only ~70 steps from scratch, 1e-4 stays at chance (fold 1: 25% vs 44%).
    "quick": TrainConfig(epochs=3, train_per_class=60, val_every=3, lr=1e-3, keep_checkpoint=False),
    # The most accuracy per CPU-minute from scratch (docs/RECIPES.md measures every choice): the same
    # Table II model, evaluated at 150 x 150.
    "fast": TrainConfig(
        epochs=10,
        batch_size=16,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.05,
        schedule="onecycle",
        warmup=0.25,
        label_smoothing=0.1,
        rotation=10.0,
        shift=0.06,
        shear=0.0,
        zoom=0.1,
        hflip=True,
        vflip=False,
        brightness=0.0,
    ),
    # For tests: a tiny timm network on small inputs.
    "tiny": TrainConfig(
        backbone="test_resnet", input_size=32, epochs=2, batch_size=8, hidden=16, train_per_class=8, channels_last=False
    ),
}


#: ``coronet reproduce --deconfound``: the levers against acquisition shortcuts chosen by measurement
#: (docs/RECIPES.md, "Disease, not source"), applied over the profile, with adult and source negatives.
#: Fold 1 (benchmarks/shortcuts.py): balancing (source, label) groups halved ieee8023's non-COVID films called
#: COVID-19, crop + equalisation gave the best Table I accuracy and COVID-19 recall; the adversary and the
#: acquisition augmentation did not help there.
DECONFOUND: dict[str, object] = {"crop": "lungs", "equalize": True, "source_balance": 0.5}
#: ... and with ``--radiography``, this many of the Database's BIMCV files drawn (before duplicates go): with Table I
#: and all of ../shared/data's adult and source negatives, COVID-19 keeps Table I's share (308 films, 22.6 %).
#: Fold 1 (benchmarks/hospitals.py, docs/RECIPES.md "More hospitals"): every BIMCV film (COVID-19 then half of the
#: films) called more of each negative source COVID-19 than this sample did; on 4 folds even this sample did
#: against none, so --deconfound leaves them out unless asked.
DECONFOUND_RADIOGRAPHY_COUNT = 311


#: Fine-tuning a trained 4-class run for another task (coronet finetune): these settings replace the
#: source run's; everything else (backbone, input size, augmentation ...) stays as the source was trained.
FINETUNE_PROFILES: dict[str, dict] = {
    # The paper says the new output layer is fine-tuned but not for how long: all layers, its lr,
    # 20 epochs (a quarter of the 4-class schedule).
    "paper": {"epochs": 20, "lr": 1e-4, "train_layers": "all", "train_per_class": None, "val_every": 1},
    # A smoke run: one epoch of the dense head only (the backbone is frozen: no backward pass through it).
    "quick": {
        "epochs": 1,
        "lr": 1e-3,
        "train_layers": "head",
        "train_per_class": 60,
        "val_every": 1,
        "keep_checkpoint": False,
    },
    "tiny": {"epochs": 1, "lr": 1e-3, "train_layers": "all", "train_per_class": 8, "val_every": 1},
    # The dense head only, on features the frozen backbone computes once: seconds per fold
    # (docs/RECIPES.md compares it with fine-tuning every layer). The imagenet profile fine-tunes the same way.
    "fast": {
        "epochs": 30,
        "lr": 1e-3,
        "batch_size": 32,
        "train_layers": "head",
        "head_on_features": True,
        "schedule": "cosine",
        "warmup": 0.1,
        "train_per_class": None,
        "val_every": 1,
        "keep_checkpoint": False,
    },
}


#: Fine-tuning Keras's ImageNet Xception on a CPU (docs/RECIPES.md, "From ImageNet", screens every choice on
#: fold 1): the fast recipe -- optimiser, schedule, light augmentation -- at a fifth of its learning rate, on
#: Keras's input scaling, for 6 epochs. The same Table II model, started where the paper started.
PROFILES["imagenet"] = replace(PROFILES["fast"], weights="imagenet", input_scale="symmetric", epochs=6, lr=2e-4)
#: Its other tasks are fine-tuned as the fast profile's: the dense head on the frozen backbone's features.
FINETUNE_PROFILES["imagenet"] = FINETUNE_PROFILES["fast"]


def parse_setting(text: str) -> tuple[str, object]:
    """``"key=value"`` -> ``(key, value)``, the value converted to the ``TrainConfig`` field's type.

    Booleans are ``true/false`` (``1/0``, ``yes/no``); tuples are comma lists; ``none`` is ``None``
    where a field allows it. Unknown keys and unconvertible values raise ``ValueError``.
    """
    key, sep, raw = text.partition("=")
    key, raw = key.strip().replace("-", "_"), raw.strip()
    hints = typing.get_type_hints(TrainConfig)
    if not sep or key not in hints:
        import difflib

        close = difflib.get_close_matches(key, hints, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close and sep else ""
        raise ValueError(f"--set {text!r}: expected KEY=VALUE{hint} with KEY one of: {', '.join(sorted(hints))}")
    kind = hints[key]
    args = typing.get_args(kind)
    try:
        if type(None) in args and raw.lower() == "none":
            return key, None
        base = next((a for a in args if a is not type(None)), kind) if type(None) in args else kind
        if base is bool:
            if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError("expected true or false")
            return key, raw.lower() in ("true", "1", "yes")
        if typing.get_origin(base) is tuple:
            item = typing.get_args(base)[0]
            return key, tuple(item(v.strip()) for v in raw.split(",") if v.strip())
        return key, base(raw)
    except ValueError as error:
        raise ValueError(f"--set {text!r}: {error}") from None


def parse_settings(items) -> dict:
    """Several ``key=value`` strings -> a dict of typed settings (see :func:`parse_setting`)."""
    return dict(parse_setting(item) for item in items or ())


def get_profile(name: str) -> TrainConfig:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
    return PROFILES[name]


def finetune_config(source: TrainConfig, profile: str, classes, **overrides) -> TrainConfig:
    """The source run's settings with fine-tuning profile ``profile``, the task's ``classes`` and ``overrides``."""
    if profile not in FINETUNE_PROFILES:
        raise ValueError(f"unknown fine-tuning profile {profile!r}; choose from {sorted(FINETUNE_PROFILES)}")
    return replace(source, classes=tuple(classes), weights="none", **FINETUNE_PROFILES[profile]).with_overrides(
        **overrides
    )


__all__ = [
    "DECONFOUND",
    "DECONFOUND_RADIOGRAPHY_COUNT",
    "RUNTIME_FIELDS",
    "FINETUNE_PROFILES",
    "PROFILES",
    "TrainConfig",
    "finetune_config",
    "get_profile",
    "parse_setting",
    "parse_settings",
]
