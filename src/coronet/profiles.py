"""Training settings as plain data: one dataclass, named profiles, explicit overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how one model is trained (defaults: the paper's settings)."""

    backbone: str = "legacy_xception"
    weights: str = "none"                # none | imagenet | PATH (our runs train from scratch)
    input_size: int = 150
    dropout: float = 0.5
    hidden: int = 256
    epochs: int = 80
    batch_size: int = 10
    lr: float = 1e-4
    seed: int = 0
    precision: str = "auto"              # auto | 32 | bf16-mixed | 16-mixed (Lightning precision)
    channels_last: bool = True
    compile: bool = False                # torch.compile: no gain measured on the 2-core CPU (benchmarks/)
    augment: bool = True
    # The authors' Keras ImageDataGenerator settings, as torchvision v2 equivalents.
    rotation: float = 50.0               # degrees
    shift: float = 0.2                   # fraction of width/height
    shear: float = 0.25                  # degrees (Keras' shear_range is an angle in degrees)
    zoom: float = 0.1                    # scale in [1 - zoom, 1 + zoom]
    flips: bool = True                   # horizontal and vertical
    brightness: float = 0.15             # in place of Keras' channel_shift_range=20 (of 255)
    train_per_class: int | None = None   # stratified subset of each fold's training part (quick runs)
    val_every: int = 1                   # validate every N epochs (the last epoch always)
    accelerator: str = "auto"
    devices: str = "1"                   # Lightning devices: "1", "2", "auto", "0,1"
    strategy: str = "auto"               # auto | ddp | ddp_spawn ...
    num_workers: int = 0                 # the 2-core CPU trains fastest with augmentation in-process
    train_layers: str = "all"            # all | head | classifier: what fine-tuning updates (the rest is frozen)
    keep_checkpoint: bool = True         # keep last.ckpt (~400 MB for CoroNet) once the fold has finished
    classes: tuple[str, ...] = ("covid", "normal", "bacterial", "viral")

    def with_overrides(self, **changes) -> "TrainConfig":
        """A copy with the non-None ``changes`` applied (unknown keys are an error)."""
        known = {f.name for f in fields(self)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown training settings: {sorted(unknown)}")
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "classes" in values:
            values["classes"] = tuple(values["classes"])
        return cls(**values)


PROFILES: dict[str, TrainConfig] = {
    # Khan et al.: Adam 1e-4, batch 10, 80 epochs, 150x150, dropout 0.5, the notebook's augmentation.
    "paper": TrainConfig(),
    # The same code on a stratified subset of each training part (all validation images are still
    # predicted), few epochs: about 9 minutes for 4 folds on a 2-core CPU. Not a result; a smoke run.
    # lr 1e-3: with only ~70 steps from scratch, 1e-4 stays at chance (fold 1: 25% vs 44%).
    "quick": TrainConfig(epochs=3, train_per_class=60, val_every=3, lr=1e-3, keep_checkpoint=False),
    # For tests: a tiny timm network on small inputs.
    "tiny": TrainConfig(backbone="test_resnet", input_size=32, epochs=2, batch_size=8, hidden=16,
                        train_per_class=8, channels_last=False),
}


#: Fine-tuning a trained 4-class run for another task (coronet finetune): these settings replace the
#: source run's; everything else (backbone, input size, augmentation ...) stays as the source was trained.
FINETUNE_PROFILES: dict[str, dict] = {
    # The paper says the new output layer is fine-tuned but not for how long: all layers, its lr,
    # 20 epochs (a quarter of the 4-class schedule).
    "paper": {"epochs": 20, "lr": 1e-4, "train_layers": "all", "train_per_class": None, "val_every": 1},
    # A smoke run: one epoch of the dense head only (the backbone is frozen: no backward pass through it).
    "quick": {"epochs": 1, "lr": 1e-3, "train_layers": "head", "train_per_class": 60, "val_every": 1,
              "keep_checkpoint": False},
    "tiny": {"epochs": 1, "lr": 1e-3, "train_layers": "all", "train_per_class": 8, "val_every": 1},
}


def get_profile(name: str) -> TrainConfig:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose from {sorted(PROFILES)}")
    return PROFILES[name]


def finetune_config(source: TrainConfig, profile: str, classes, **overrides) -> TrainConfig:
    """The source run's settings with fine-tuning profile ``profile``, the task's ``classes`` and ``overrides``."""
    if profile not in FINETUNE_PROFILES:
        raise ValueError(f"unknown fine-tuning profile {profile!r}; choose from {sorted(FINETUNE_PROFILES)}")
    return replace(source, classes=tuple(classes), weights="none",
                   **FINETUNE_PROFILES[profile]).with_overrides(**overrides)


__all__ = ["FINETUNE_PROFILES", "PROFILES", "TrainConfig", "finetune_config", "get_profile"]
