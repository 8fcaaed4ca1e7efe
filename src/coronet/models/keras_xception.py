"""Keras's Xception, exactly, in timm's ``legacy_xception`` modules: registered with timm as ``keras_xception``.

timm's ``legacy_xception`` has Keras's layers but PyTorch's defaults in two places, which change what
Keras's ImageNet weights compute:

- batch normalisation: Keras divides by ``sqrt(var + 1e-3)``, PyTorch by ``sqrt(var + 1e-5)``;
- the four strided 3x3 max-pools: Keras pads "same" as TensorFlow does (nothing before, one row and
  column after, for an even input), PyTorch one on each side -- a window shifted by a pixel.

``keras_xception`` is ``legacy_xception`` with both set as Keras has them. Its parameters and buffers
have the same names and shapes (20,861,480 values), so a state dict fits either network; only what they
compute differs. ImageNet weights imported from Keras (:mod:`coronet.models.keras_weights`) are run on it.
"""

from __future__ import annotations

from timm.layers.pool2d_same import MaxPool2dSame
from timm.models import register_model
from timm.models.xception import Xception
from torch import nn

#: Keras's ``BatchNormalization(epsilon=1e-3)``, as in ``keras.applications.Xception``.
KERAS_BATCHNORM_EPS = 1e-3


def make_keras_exact(model: Xception) -> Xception:
    """Give ``model`` Keras's batch-norm epsilon and TensorFlow-"same" max-pools (in place); return it."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eps = KERAS_BATCHNORM_EPS
        rep = getattr(module, "rep", None)
        if isinstance(rep, nn.Sequential):
            for index, layer in enumerate(rep):
                if type(layer) is nn.MaxPool2d:
                    rep[index] = MaxPool2dSame(layer.kernel_size, stride=layer.stride)
    return model


@register_model
def keras_xception(pretrained: bool = False, **kwargs) -> Xception:
    """Xception as ``keras.applications.Xception`` computes it (see the module docstring).

    ``num_classes=0, global_pool=""`` gives the feature extractor (timm convention). ImageNet weights
    come from :func:`coronet.models.imagenet.imagenet_weights`, not from timm's ``pretrained``.
    """
    if pretrained:
        raise ValueError("keras_xception takes its ImageNet weights from coronet (--weights imagenet)")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    return make_keras_exact(Xception(**kwargs))


__all__ = ["KERAS_BATCHNORM_EPS", "keras_xception", "make_keras_exact"]
