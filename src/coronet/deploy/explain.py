"""Grad-CAM for a CoroNet: which regions of the film drove a class score.

Grad-CAM (Selvaraju et al., ICCV 2017) weights each channel of a convolutional
feature map by the mean gradient of the class score with respect to it, sums
the weighted channels and keeps the positive part. The computation itself is
the ``grad-cam`` package's (``pytorch_grad_cam.GradCAM``); this module decides
*where* to look and makes it cheap and safe to call from a server:

* **Target layer, chosen automatically.** :func:`find_target_layer` runs one
  forward pass through the backbone with a hook on every module and takes the
  last module that computes a 4-D feature map (timm's legacy_xception: ``act4``,
  the ReLU after the last separable convolution; ResNets: ``layer4``). That map
  is the one CoroNet's head flattens, so the heat map explains the head's input.
* **A private copy of the network.** Grad-CAM hooks the target layer and needs
  gradients; hooks on the network that serves predictions would fire for every
  concurrent request. :class:`GradCam` therefore works on its own frozen copy,
  one call at a time (a lock), and leaves the caller's model untouched.
* **Backward through the head only.** The copy's parameters are frozen and the
  input needs no gradient, so no graph is built below the target layer; a hook
  starts one at the target layer's output. The gradients Grad-CAM needs (class
  score with respect to that output) are unchanged; the backward pass through
  the whole backbone is skipped.

:func:`overlay` draws a heat map over the film as an RGB image; :func:`fit` shrinks a film for display.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from io import BytesIO

import numpy as np
import torch
from PIL import Image
from torch import nn

__all__ = ["GradCam", "find_target_layer", "fit", "into_box", "overlay", "png_bytes"]


def find_target_layer(backbone: nn.Module, input_size: int) -> str:
    """Name (as in ``backbone.named_modules()``) of the last module that computes a 4-D feature map.

    One forward pass of a blank ``(1, 3, input_size, input_size)`` image, with hooks on every
    sub-module, lists the modules in the order they finish whose output is a 4-D tensor. A module
    that returns its input untouched (the same tensor, not modified in place: ``nn.Identity``,
    timm's pooling placeholder when ``global_pool=""``) computes nothing and is passed over; an
    in-place activation, which returns its input modified, counts. The backbone itself is excluded.
    Raises ``ValueError`` when no sub-module produces a 4-D map.
    """
    seen_input: dict[str, tuple[int, int]] = {}
    finished: list[str] = []

    def before(name):
        def hook(module, args):
            first = args[0] if args else None
            if isinstance(first, torch.Tensor):
                seen_input[name] = (id(first), first._version)

        return hook

    def after(name):
        def hook(module, args, output):
            if not isinstance(output, torch.Tensor) or output.ndim != 4:
                return
            if seen_input.get(name) == (id(output), output._version):
                return  # handed its input back unchanged
            finished.append(name)

        return hook

    handles = []
    for name, module in backbone.named_modules():
        if name:  # "" is the backbone itself
            handles += [module.register_forward_pre_hook(before(name)), module.register_forward_hook(after(name))]
    was_training = backbone.training
    try:
        backbone.eval()
        # Not in inference mode even inside a caller's inference_mode block: its tensors have no version counter.
        with torch.inference_mode(False), torch.no_grad():
            backbone(torch.zeros(1, 3, input_size, input_size))
    finally:
        backbone.train(was_training)
        for handle in handles:
            handle.remove()
    if not finished:
        raise ValueError(f"{type(backbone).__name__}: no sub-module produces a 4-D feature map for Grad-CAM")
    return finished[-1]


class GradCam:
    """Grad-CAM heat maps for a CoroNet, on a private frozen copy of it; safe to share between threads.

    ``model`` is a CoroNet (``.backbone`` + ``.head``, input ``(N, 1, S, S)`` floats in [0, 1]);
    it is copied, never modified. Calls are serialised by a lock: the copy's hooks hold one
    call's activations at a time. A caller with a bounded pool of worker threads should queue
    for it in a slot of its own rather than wait on the lock in a shared worker (``coronet
    serve`` runs Grad-CAM under a one-thread limiter, apart from the prediction threads).
    """

    def __init__(self, model: nn.Module, input_size: int):
        self.input_size = int(input_size)
        # Copy first: even the target-layer search hooks the network, and the caller's may be
        # serving predictions in other threads right now.
        with torch.inference_mode(False):  # a copy made in inference mode could never join a backward pass
            self._model = copy.deepcopy(model).eval()
        self._model.requires_grad_(False)
        backbone = self._model.get_submodule("backbone")
        self.layer_name = find_target_layer(backbone, self.input_size)
        self._layer = backbone.get_submodule(self.layer_name)
        self._layer.register_forward_hook(_start_graph_here)
        self._lock = threading.Lock()

    @property
    def target_layer(self) -> str:
        """The target layer's name inside the model, e.g. ``backbone.act4``."""
        return f"backbone.{self.layer_name}"

    def __call__(self, batch: np.ndarray, classes: Sequence[int]) -> np.ndarray:
        """Heat maps ``(N, S, S)`` float32 in [0, 1], image ``i`` explaining class index ``classes[i]``.

        ``batch`` is the model's input, ``(N, 1, S, S)`` float32 in [0, 1]. Each map is scaled
        by its own maximum (Grad-CAM's convention); an all-zero map means no positive evidence.
        """
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        batch = np.asarray(batch, dtype=np.float32)
        if batch.ndim != 4 or len(classes) != len(batch):
            raise ValueError(f"expected (N, 1, S, S) images and N classes, got {batch.shape} and {len(classes)}")
        targets = [ClassifierOutputTarget(int(c)) for c in classes]
        with self._lock, torch.inference_mode(False), torch.enable_grad():
            tensor = torch.tensor(batch)  # created here, outside any inference mode, so autograd may use it
            cam = GradCAM(model=self._model, target_layers=[self._layer])
            try:
                maps = cam(input_tensor=tensor, targets=targets)
            finally:
                cam.activations_and_grads.release()
        maps = np.asarray(maps, dtype=np.float32)
        crop = getattr(getattr(self._model, "preprocess", None), "crop", None)
        if crop:  # the backbone saw only the box: put each map back in its place
            maps = np.stack([into_box(m, crop) for m in maps])
        return maps


def into_box(heatmap: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """A heat map of a network that crops its input to ``box`` (fractions, :mod:`coronet.models.preprocess`),
    moved from the cropped frame back into the film's: resized to the box and zero outside it."""
    height, width = heatmap.shape
    x0, y0 = int(round(box[0] * width)), int(round(box[1] * height))
    x1, y1 = max(x0 + 1, int(round(box[2] * width))), max(y0 + 1, int(round(box[3] * height)))
    inside = Image.fromarray(np.asarray(heatmap, dtype=np.float32)).resize(
        (x1 - x0, y1 - y0), Image.Resampling.BILINEAR
    )
    out = np.zeros_like(heatmap, dtype=np.float32)
    out[y0:y1, x0:x1] = np.asarray(inside)
    return out


def _start_graph_here(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    # Nothing upstream requires a gradient (frozen weights, plain input), so the output is a
    # constant; making it a leaf that requires grad lets autograd record only the layers after it.
    return output.detach().requires_grad_(True)


def overlay(image: np.ndarray, heatmap: np.ndarray, *, max_side: int = 512, image_weight: float = 0.6) -> np.ndarray:
    """The film in grey with ``heatmap`` in colour (jet) blended over it: ``(H, W, 3)`` uint8 RGB.

    ``image`` is the decoded 2-D uint8 film at any size; ``heatmap`` the ``(S, S)`` map for the
    model's square input, values in [0, 1]. The model saw the film squashed to a square, so the
    map is stretched back to the film's own shape; the result keeps the film's aspect ratio with
    its longest side at most ``max_side``. ``image_weight`` is the film's share of the blend.
    """
    from pytorch_grad_cam.utils.image import show_cam_on_image

    film = fit(image, max_side)
    size = (film.shape[1], film.shape[0])
    mask = Image.fromarray(np.asarray(heatmap, dtype=np.float32)).resize(size, Image.Resampling.BILINEAR)
    rgb = np.repeat(film.astype(np.float32)[..., None] / 255.0, 3, axis=2)
    return show_cam_on_image(rgb, np.clip(np.asarray(mask), 0.0, 1.0), use_rgb=True, image_weight=image_weight)


def fit(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` (2-D uint8) shrunk, aspect kept, so that its longest side is at most ``max_side``."""
    film = Image.fromarray(np.asarray(image, dtype=np.uint8))
    scale = min(1.0, max_side / max(film.size))
    size = (max(1, round(film.width * scale)), max(1, round(film.height * scale)))
    return np.asarray(film.resize(size, Image.Resampling.BILINEAR) if size != film.size else film)


def png_bytes(image: np.ndarray) -> bytes:
    """``image`` (2-D uint8 grey or ``(H, W, 3)`` uint8 RGB) encoded as PNG."""
    buffer = BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
