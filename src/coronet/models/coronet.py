"""CoroNet (the paper's Table II) and the same head on other timm backbones.

    input (N, 1, H, W), float in [0, 1]
      -> crop to the lung field, equalise the histogram (each optional, off in the paper: coronet.models.preprocess)
      -> normalise, replicate grayscale to 3 channels
      -> backbone without classifier or pooling (Xception: 5 x 5 x 2048 at 150 x 150)
      -> Flatten -> Dropout(0.5) -> Linear(features, 256) + ReLU -> Linear(256, classes)

The model returns logits; softmax is applied by whoever needs probabilities.
Preprocessing and normalisation live inside the model, so a saved model is used the same
way everywhere (training, prediction, ONNX, the web service, Grad-CAM).
"""

from __future__ import annotations

import logging
import os

import timm
import torch
import torch.nn.functional as F
from torch import nn

from . import darkcovidnet as _darkcovidnet  # noqa: F401  (registers the peer network with timm)
from . import keras_xception as _keras_xception  # noqa: F401  (registers Keras's exact Xception with timm)
from .preprocess import FilmPreprocess
from .weightfiles import WeightsError, load_backbone_weights  # noqa: F401  (their home before; still imported)

logger = logging.getLogger(__name__)

DEFAULT_BACKBONE = "legacy_xception"
#: The paper (Keras notebook) only rescales pixels by 1/255: mean 0, std 1 after that.
PAPER_NORMALISATION = {"mean": 0.0, "std": 1.0}


class CoroNet(nn.Module):
    """A timm backbone's spatial features, flattened, then the paper's two dense layers."""

    def __init__(
        self,
        backbone: nn.Module,
        feature_shape: tuple[int, int, int],
        num_classes: int,
        hidden: int = 256,
        dropout: float = 0.5,
        mean: float = 0.0,
        std: float = 1.0,
        preprocess: FilmPreprocess | None = None,
    ):
        super().__init__()
        self.preprocess = preprocess or FilmPreprocess()
        self.backbone = backbone
        self.feature_shape = tuple(feature_shape)
        channels, height, width = feature_shape
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels * height * width, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)

    mean: torch.Tensor
    std: torch.Tensor
    backbone: nn.Module

    @property
    def classifier(self) -> nn.Linear:
        """The last layer (replaced when fine-tuning for another label set)."""
        layer = self.head[-1]
        assert isinstance(layer, nn.Linear)
        return layer

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(x)
        x = (x - self.mean) / self.std
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from the backbone's feature map (what :meth:`forward` does after :meth:`forward_features`)."""
        if tuple(features.shape[-2:]) != self.feature_shape[1:]:
            # progressive resizing trains the first epochs below input_size: bring the smaller feature
            # map to the head's grid (never the case at input_size, so the Table II model is unchanged)
            features = F.interpolate(features, size=self.feature_shape[1:], mode="bilinear", align_corners=False)
        return self.head(features)


class FlipTTA(nn.Module):
    """Test-time augmentation: the mean of the softmax of a film and of its mirror image.

    Returns the log of the averaged probabilities, so ``softmax`` of the output is that
    average and the wrapper stands wherever a network's logits are expected.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probabilities = (torch.softmax(self.model(x), dim=1) + torch.softmax(self.model(x.flip(-1)), dim=1)) / 2
        return torch.log(probabilities.clamp_min(1e-12))


TTA_MODES = (None, "hflip")


def with_tta(model: nn.Module, tta: str | None) -> nn.Module:
    """``model`` wrapped for the test-time augmentation ``tta`` (``None``: unchanged, ``"hflip"``: :class:`FlipTTA`)."""
    if tta not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose from {TTA_MODES}")
    return FlipTTA(model) if tta == "hflip" else model


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str | os.PathLike | None = None) -> nn.Module:
    """A timm model without classifier and pooling, so it returns its last feature map.

    weights: ``None``/``"none"`` (random init), ``"imagenet"`` (:func:`coronet.models.imagenet.load_imagenet`:
    Keras's Xception imported offline, else timm's hub; an Xception is then built as ``keras_xception``) or a
    path to a safetensors / torch state dict of the backbone.
    """
    from .imagenet import imagenet_backbone, load_imagenet

    weights = None if weights in (None, "none", "") else weights
    if weights == "imagenet":
        name = imagenet_backbone(name)
    backbone = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    if weights == "imagenet":
        source = load_imagenet(backbone, name)
        logger.info(f"ImageNet weights for {name}: {source}")
    elif weights is not None:
        load_backbone_weights(backbone, weights)
    return backbone


def feature_shape(backbone: nn.Module, input_size: int) -> tuple[int, int, int]:
    """(channels, height, width) of the backbone's output for a square ``input_size`` image."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        shape = backbone(torch.zeros(1, 3, input_size, input_size)).shape[1:]
    backbone.train(was_training)
    if len(shape) != 3:
        raise ValueError(f"backbone returns shape {tuple(shape)}, expected a (C, H, W) feature map")
    channels, height, width = (int(s) for s in shape)
    return channels, height, width


def build_model(
    num_classes: int = 4,
    backbone: str = DEFAULT_BACKBONE,
    weights: str | os.PathLike | None = None,
    input_size: int = 150,
    hidden: int = 256,
    dropout: float = 0.5,
    mean: float = PAPER_NORMALISATION["mean"],
    std: float = PAPER_NORMALISATION["std"],
    crop=None,
    equalize: bool = False,
) -> CoroNet:
    """CoroNet on ``backbone`` (any timm name); the Flatten size is derived from the backbone's feature map.

    crop, equalize: the film preprocessing (:class:`coronet.models.preprocess.FilmPreprocess`; ``crop`` as
    :func:`coronet.models.preprocess.parse_crop` reads it).
    """
    from .preprocess import parse_crop

    net = create_backbone(backbone, weights)
    return CoroNet(
        net,
        feature_shape(net, input_size),
        num_classes,
        hidden=hidden,
        dropout=dropout,
        mean=mean,
        std=std,
        preprocess=FilmPreprocess(parse_crop(crop), equalize),
    )


TRAINABLE_PARTS = ("all", "head", "classifier")


def replace_classifier(model: CoroNet, num_classes: int) -> CoroNet:
    """Give ``model`` a new, freshly initialised last layer with ``num_classes`` outputs (in place).

    Everything else -- backbone and the 256-unit dense layer -- keeps its trained weights:
    the paper derives its 3-class and binary models this way from the 4-class model.
    """
    old = model.classifier
    model.head[-1] = nn.Linear(old.in_features, num_classes).to(old.weight.device, old.weight.dtype)
    return model


def set_trainable(model: CoroNet, part: str) -> None:
    """Freeze all but ``part``: ``all`` (nothing frozen), ``head`` (the dense layers) or ``classifier`` (last layer)."""
    if part not in TRAINABLE_PARTS:
        raise ValueError(f"trainable part must be one of {TRAINABLE_PARTS}, not {part!r}")
    trainable = {"all": model, "head": model.head, "classifier": model.head[-1]}[part]
    model.requires_grad_(part == "all")
    trainable.requires_grad_(True)


def configure_batchnorm(model: CoroNet, momentum: float = 0.1, zero_init_last: bool = False) -> None:
    """Set every BatchNorm's running-statistics ``momentum``; optionally start residual branches at zero.

    zero_init_last: the last BatchNorm of each residual branch gets a zero scale, so every block
    starts as (nearly) its shortcut -- Goyal et al.'s trick for fast early training. Xception's
    blocks (``rep`` + shortcut) are handled here; other timm blocks through their ``zero_init_last``.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum
    if not zero_init_last:
        return
    for module in model.backbone.modules():
        rep = getattr(module, "rep", None)
        if isinstance(rep, nn.Sequential) and hasattr(module, "skip"):
            norms = [m for m in rep if isinstance(m, nn.BatchNorm2d)]
            if norms:
                nn.init.zeros_(norms[-1].weight)
        elif hasattr(module, "zero_init_last") and callable(module.zero_init_last):
            module.zero_init_last()


def count_parameters(module: nn.Module) -> dict[str, int]:
    """Trainable parameters and BatchNorm running-statistic elements (Keras' "non-trainable")."""
    return {
        "trainable": sum(p.numel() for p in module.parameters() if p.requires_grad),
        "batchnorm_statistics": sum(
            b.numel() for name, b in module.named_buffers() if name.endswith(("running_mean", "running_var"))
        ),
    }
