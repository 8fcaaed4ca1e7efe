"""Grad-CAM: the automatic target layer, the heat maps against a hand computation, the overlay."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from coronet.deploy.explain import GradCam, find_target_layer, fit, overlay
from coronet.models.coronet import build_model, create_backbone


@pytest.mark.parametrize(
    "backbone,size,expected",
    [
        ("legacy_xception", 150, "act4"),  # the ReLU after the last separable conv: 2048 x 5 x 5
        ("resnet18", 64, "layer4"),
        ("test_resnet", 64, "layer4"),
    ],
)
def test_target_layer_of_timm_backbones(backbone, size, expected):
    assert find_target_layer(create_backbone(backbone), size) == expected


def test_target_layer_rule_skips_pass_throughs_but_not_in_place_activations():
    toy = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True), nn.Identity(), nn.Sequential(nn.Identity())
    )
    assert find_target_layer(toy, 16) == "2"  # the in-place ReLU modifies its input: it computes something
    toy[2] = nn.ReLU()
    assert find_target_layer(toy, 16) == "2"
    toy[2] = nn.Identity()
    assert find_target_layer(toy, 16) == "1"
    assert find_target_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()), 8) == "0"
    with pytest.raises(ValueError, match="4-D"):
        find_target_layer(nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)), 8)


def _hand_grad_cam(model, layer: nn.Module, batch: torch.Tensor, classes) -> np.ndarray:
    """Grad-CAM by the paper's formula, with plain autograd on the original model."""
    store = {}
    handle = layer.register_forward_hook(lambda module, args, output: store.update(a=output))
    logits = model(batch)
    handle.remove()
    activations = store["a"]
    grads = torch.autograd.grad(logits[torch.arange(len(classes)), torch.tensor(classes)].sum(), activations)[0]
    cams = F.relu((grads.mean((2, 3), keepdim=True) * activations).sum(1)).detach().numpy()
    out = []
    for cam in cams:  # the package's scaling: to [0, 1], resized to the input, to [0, 1] again
        cam = (cam - cam.min()) / (1e-7 + (cam - cam.min()).max())
        cam = np.asarray(
            torch.nn.functional.interpolate(
                torch.tensor(cam)[None, None], size=batch.shape[-2:], mode="bilinear", align_corners=False
            )[0, 0]
        )
        out.append((cam - cam.min()) / (1e-7 + (cam - cam.min()).max()))
    return np.stack(out)


@pytest.mark.parametrize("backbone,size", [("test_resnet", 96), ("resnet18", 96)])
def test_grad_cam_matches_the_formula_and_leaves_the_model_alone(backbone, size):
    torch.manual_seed(0)
    model = build_model(4, backbone, input_size=size, hidden=8).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = np.random.default_rng(1).random((3, 1, size, size), dtype=np.float32)
    cam = GradCam(model, size)
    maps = cam(batch, [0, 2, 3])
    assert maps.shape == (3, size, size) and maps.dtype == np.float32
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6
    layer = model.backbone.get_submodule(cam.layer_name)
    hand = _hand_grad_cam(model, layer, torch.tensor(batch), [0, 2, 3])
    # Both resize the small map bilinearly (OpenCV vs PyTorch): compare at the feature map's own cells.
    h = model.feature_shape[1]
    step = size // h
    centres = np.arange(h) * step + step // 2
    np.testing.assert_allclose(maps[:, centres][:, :, centres], hand[:, centres][:, :, centres], atol=0.05)
    assert not np.allclose(cam(batch[:1], [0]), cam(batch[:1], [1]))  # another class, another map
    # The served model is untouched: no hooks left, gradients still enabled, same weights and outputs.
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(p.requires_grad and p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_grad_cam_never_hooks_the_callers_model(monkeypatch):
    """Not even briefly: a server's other threads run predictions on that model meanwhile."""
    model = build_model(4, "test_resnet", input_size=64, hidden=8).eval()
    hooked = []
    for method in ("register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook"):
        original = getattr(nn.Module, method)

        def spy(self, *args, _original=original, **kwargs):
            hooked.append(self)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(nn.Module, method, spy)
    with torch.inference_mode():  # as in a serving thread
        cam = GradCam(model, 64)
        cam(np.zeros((1, 1, 64, 64), np.float32), [1])
    own = {id(m) for m in model.modules()}
    assert hooked and not any(id(m) in own for m in hooked)


def test_overlay_keeps_the_film_aspect_and_caps_the_size():
    film = np.tile(np.arange(300, dtype=np.uint8)[None, :], (700, 1))  # 700 high, 300 wide
    heat = np.zeros((8, 8), np.float32)
    heat[:4] = 1.0  # upper half hot
    picture = overlay(film, heat, max_side=350)
    assert picture.shape == (350, 150, 3) and picture.dtype == np.uint8
    top, bottom = picture[:150].astype(int), picture[-150:].astype(int)
    assert top[..., 0].mean() > bottom[..., 0].mean() + 50  # red (jet's hot end) where the map is high
    assert bottom[..., 2].mean() > top[..., 2].mean() + 50  # blue where it is low
    assert fit(film, 1000).shape == film.shape  # never enlarged
