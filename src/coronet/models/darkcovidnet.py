"""A DarkCovidNet-style network (Ozturk et al. 2020), the small peer in the paper's Table VII.

DarkCovidNet is DarkNet-19 cut down to 17 convolutions: ``conv-BN-LeakyReLU`` units,
five max-pools, "triple" units (3x3 widen, 1x1 squeeze, 3x3 widen) and a last
convolution down to a few channels, about 1.1M parameters in all. It is registered
with timm as ``darkcovidnet`` so every command takes it like any other backbone
(``--backbone darkcovidnet``); with ``num_classes=0`` (how :mod:`coronet.models.coronet` builds
backbones) it returns its last feature map, which CoroNet's dense head then classifies,
as the original's Flatten + Linear does.
"""

from __future__ import annotations

from timm.models import register_model
from torch import nn


def conv_unit(in_channels: int, out_channels: int, kernel: int = 3) -> nn.Sequential:
    """Convolution (no bias: BatchNorm follows), BatchNorm, LeakyReLU(0.1): DarkNet's unit."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.1, inplace=True),
    )


def triple_unit(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 to ``out_channels``, 1x1 back to ``in_channels``, 3x3 to ``out_channels``."""
    return nn.Sequential(
        conv_unit(in_channels, out_channels),
        conv_unit(out_channels, in_channels, 1),
        conv_unit(in_channels, out_channels),
    )


class DarkCovidNet(nn.Module):
    """The convolutional part of DarkCovidNet, plus (``num_classes > 0``) its Flatten + Linear classifier."""

    def __init__(self, num_classes: int = 3, in_chans: int = 3, out_channels: int = 3, input_size: int = 256, **_):
        super().__init__()
        pool = nn.MaxPool2d(2, 2)
        self.features = nn.Sequential(
            conv_unit(in_chans, 8),
            pool,
            conv_unit(8, 16),
            pool,
            triple_unit(16, 32),
            pool,
            triple_unit(32, 64),
            pool,
            triple_unit(64, 128),
            pool,
            triple_unit(128, 256),
            conv_unit(256, 128, 1),
            conv_unit(128, 256),
            conv_unit(256, out_channels),
        )
        self.num_classes = num_classes
        side = input_size // 32
        self.classifier = (
            nn.Sequential(nn.Flatten(), nn.Linear(out_channels * side * side, num_classes))
            if num_classes > 0
            else nn.Identity()
        )

    def forward(self, x):
        return self.classifier(self.features(x))


@register_model
def darkcovidnet(pretrained: bool = False, **kwargs) -> DarkCovidNet:
    """DarkCovidNet-style network; ``num_classes=0`` gives the feature extractor (timm convention)."""
    if pretrained:
        raise ValueError("darkcovidnet has no pretrained weights")
    kwargs.pop("global_pool", None)
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    return DarkCovidNet(**kwargs)


__all__ = ["DarkCovidNet", "darkcovidnet"]
