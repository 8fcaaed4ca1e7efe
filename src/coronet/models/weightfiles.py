"""Backbone weight files: loaded without unpickling anything, checked against the network, refused in one line."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import CoronetError

__all__ = ["WeightsError", "load_backbone_weights"]


class WeightsError(CoronetError, RuntimeError):
    """Backbone weights could not be obtained or do not fit the backbone."""


def load_backbone_weights(backbone: nn.Module, path: str | os.PathLike) -> None:
    """Load a backbone state dict from ``path`` without unpickling arbitrary objects.

    Accepts a bare backbone state dict, a full timm model's (classifier keys ``fc.*`` /
    ``classifier.*`` / ``head.fc.*`` are ignored) or a CoroNet's (``backbone.`` prefix).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise WeightsError(
            f"{path}: not a readable safetensors or weights-only torch state dict ({type(error).__name__})"
        ) from error
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(state).__name__}")
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
    own = backbone.state_dict()
    state = {k: v for k, v in state.items() if k in own or k.split(".")[0] not in ("fc", "classifier", "head")}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or mismatched:
        raise WeightsError(
            f"{path}: does not fit {type(backbone).__name__}: {len(missing)} missing "
            f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]}), "
            f"{len(mismatched)} with other shapes (e.g. {mismatched[:2]})"
        )
    backbone.load_state_dict(state)
