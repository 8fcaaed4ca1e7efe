"""Keras's Xception weights, read with h5py (never Keras or TensorFlow) and mapped onto timm's Xception.

Three containers hold them:

- a Keras 3 ``.keras`` archive (a zip of ``config.json`` and ``model.weights.h5``), the backbone alone or
  nested in a larger functional model. Keras 3 stores each layer under a generic name made of its class
  (``separable_conv2d_3``, ``batch_normalization_39``) in the order ``config.json`` lists the layers; the
  config gives the Keras names (``block2_sepconv1``) in that same order;
- Keras 2's classic weights file (``xception_weights_tf_dim_ordering_tf_kernels_notop.h5``): one group per
  layer, named as Keras names it, with named variables (``kernel:0``, ``gamma:0``, ...);
- a wheel (zip) holding either.

The mapping is strict: every backbone parameter and batch-norm statistic is filled exactly once, every
Keras backbone layer with weights is used exactly once, shapes are checked, and anything else is a
:class:`KerasImportError` whose one line names the layer. Layers outside the backbone (a classifier on
top, optimizer slots) are not read.
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CoronetError
from ..layout import atomic_path, file_sha256

#: The Keras layer every Xception starts with: how a backbone is recognised inside a larger model.
FIRST_LAYER = "block1_conv1"
#: Keras variable names per kind of layer, in the order Keras 3 stores them (``vars/0``, ``vars/1``, ...).
VARIABLES = {
    "conv": ("kernel", "bias"),
    "sepconv": ("depthwise_kernel", "pointwise_kernel", "bias"),
    "bn": ("gamma", "beta", "moving_mean", "moving_variance"),
}
KINDS = {"Conv2D": "conv", "SeparableConv2D": "sepconv", "BatchNormalization": "bn"}
#: Keras variable -> (torch tensor suffix, axes that turn Keras's layout into PyTorch's).
#: Keras keeps kernels HWIO (conv, pointwise) and HWC1 (depthwise); PyTorch OIHW and C1HW.
TORCH_NAMES = {
    ("conv", "kernel"): ("weight", (3, 2, 0, 1)),
    ("sepconv", "depthwise_kernel"): ("conv1.weight", (2, 3, 0, 1)),
    ("sepconv", "pointwise_kernel"): ("pointwise.weight", (3, 2, 0, 1)),
    ("bn", "gamma"): ("weight", None),
    ("bn", "beta"): ("bias", None),
    ("bn", "moving_mean"): ("running_mean", None),
    ("bn", "moving_variance"): ("running_var", None),
}


class KerasImportError(CoronetError, ValueError):
    """A Keras file that does not hold an Xception backbone timm's Xception can take, said in one line."""


@dataclass
class KerasLayer:
    """One Keras layer with weights: its Keras name, kind (conv, sepconv, bn) and variables by name."""

    name: str
    kind: str
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    stored_as: str = ""  # where it is in the HDF5 file


@dataclass
class ImportedBackbone:
    """What :func:`read_keras_backbone` found: the tensors for timm's Xception and where each came from."""

    state_dict: dict[str, torch.Tensor]
    mapping: dict[str, str]  # Keras layer -> timm module
    container: str  # keras3 | keras2-h5
    member: str | None  # the file inside a wheel or archive it was read from


# --------------------------------------------------------------------------- reading the files
def _snake_case(name: str) -> str:
    """Keras 3's ``naming.to_snake_case``: how it names a layer's group in ``model.weights.h5``."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _find_backbone(config: dict, path: str = "") -> tuple[list[dict], str] | None:
    """The layer list of the (possibly nested) model that starts with ``block1_conv1``, and its HDF5 group."""
    layers = config.get("config", {}).get("layers")
    if not isinstance(layers, list):
        return None
    if any(layer.get("config", {}).get("name") == FIRST_LAYER for layer in layers):
        return layers, path
    used: dict[str, int] = {}
    for layer in layers:
        stored = _generic_name(layer, used)
        found = _find_backbone(layer, f"{path}layers/{stored}/")
        if found is not None:
            return found
    return None


def _generic_name(layer: dict, used: dict[str, int]) -> str:
    name = _snake_case(layer.get("class_name", ""))
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _keras3_layers(config: dict, weights) -> list[KerasLayer]:
    """The backbone's layers with weights, from a ``.keras`` archive's config and ``model.weights.h5``."""
    found = _find_backbone(config)
    if found is None:
        raise KerasImportError(f"no Xception in the archive: no layer named {FIRST_LAYER!r} in its config.json")
    layers, group = found
    used: dict[str, int] = {}
    result = []
    for layer in layers:
        stored = f"{group}layers/{_generic_name(layer, used)}"
        name = layer.get("config", {}).get("name", stored)
        kind = KINDS.get(layer.get("class_name", ""))
        variables = weights.get(f"{stored}/vars")
        count = len(variables) if variables is not None else 0
        if kind is None:
            if count:
                kind_name = layer.get("class_name")
                raise KerasImportError(f"layer {name!r} ({kind_name}) has weights but no place in Xception")
            continue
        names = VARIABLES[kind]
        if count > len(names):
            raise KerasImportError(f"layer {name!r} has {count} variables, {kind} layers have at most {len(names)}")
        arrays = {names[i]: np.asarray(variables[str(i)]) for i in range(count)}
        result.append(KerasLayer(name, kind, arrays, stored))
    return result


def _keras2_layers(handle) -> list[KerasLayer]:
    """The backbone's layers from a classic Keras 2 weights file (a whole-model file's ``model_weights`` too)."""
    root = handle["model_weights"] if "model_weights" in handle else handle
    if "layer_names" not in root.attrs:
        raise KerasImportError("not a Keras weights file: no 'layer_names' attribute and no config.json")
    layers: dict[str, KerasLayer] = {}
    for raw_group in root.attrs["layer_names"]:
        group_name = _text(raw_group)
        group = root[group_name]
        for raw in group.attrs.get("weight_names", []):
            weight_name = _text(raw)
            # a nested model's group lists its layers' weights as "inner_layer/variable:0"
            layer_name, _, variable = weight_name.rpartition("/")
            layer = layers.setdefault(layer_name or group_name, KerasLayer(layer_name or group_name, ""))
            layer.stored_as = layer.stored_as or f"{group_name}/{weight_name}"
            layer.variables[variable.split(":")[0]] = np.asarray(group[weight_name])
    names = list(layers)
    if FIRST_LAYER not in names:
        raise KerasImportError(f"no Xception in the file: no layer named {FIRST_LAYER!r}")
    backbone = []
    for name in names[names.index(FIRST_LAYER) :]:
        layer = layers[name]
        layer.kind = _kind_of(layer)
        if layer.kind != "dense":  # a classifier saved after the backbone is not part of it
            backbone.append(layer)
    return backbone


def _kind_of(layer: KerasLayer) -> str:
    """A classic file's layer kind, from its variables' names (it records no class)."""
    variables = layer.variables
    if "depthwise_kernel" in variables:
        return "sepconv"
    if "moving_mean" in variables or "gamma" in variables:
        return "bn"
    kernel = variables.get("kernel")
    if kernel is not None:
        return "conv" if kernel.ndim == 4 else "dense"
    raise KerasImportError(f"layer {layer.name!r}: variables {sorted(variables)} make no known kind of layer")


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _open_h5(data: bytes):
    try:
        import h5py
    except ImportError as error:
        raise KerasImportError("reading Keras weights needs h5py: pip install 'coronet[weights]' (or h5py)") from error
    return h5py.File(io.BytesIO(data), "r")


def _layers_from_bytes(data: bytes, name: str) -> tuple[list[KerasLayer], str]:
    """The backbone layers of a ``.keras`` archive or an HDF5 file given as bytes."""
    if zipfile.is_zipfile(io.BytesIO(data)):
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = set(archive.namelist())
            if {"config.json", "model.weights.h5"} <= members:
                config = json.loads(archive.read("config.json"))
                with _open_h5(archive.read("model.weights.h5")) as handle:
                    return _keras3_layers(config, handle), "keras3"
        raise KerasImportError(f"{name}: a zip without config.json and model.weights.h5 (not a .keras archive)")
    if not data.startswith(b"\x89HDF\r\n\x1a\n"):
        raise KerasImportError(f"{name}: neither a .keras archive, an HDF5 file nor a wheel")
    with _open_h5(data) as handle:
        return _keras2_layers(handle), "keras2-h5"


def read_keras_layers(path: str | os.PathLike) -> tuple[list[KerasLayer], str, str | None]:
    """``(backbone layers, container, member)`` of ``path``: a ``.keras`` archive, a classic ``.h5``, or a
    wheel holding one (``member``: the file inside the wheel it was read from)."""
    path = Path(path)
    if not path.is_file():
        raise KerasImportError(f"{path}: no such file")
    data = path.read_bytes()
    if path.suffix == ".whl" or (zipfile.is_zipfile(path) and path.suffix not in (".keras",)):
        with zipfile.ZipFile(path) as wheel:
            candidates = [m for m in wheel.namelist() if m.endswith((".keras", ".h5"))]
            failures = []
            for member in candidates:
                try:
                    layers, container = _layers_from_bytes(wheel.read(member), member)
                    return layers, container, member
                except KerasImportError as error:
                    failures.append(str(error))
        detail = f" ({'; '.join(failures)[:200]})" if failures else ""
        raise KerasImportError(f"{path}: no .keras or .h5 file with an Xception inside{detail}")
    layers, container = _layers_from_bytes(data, str(path))
    return layers, container, None


# --------------------------------------------------------------------------- mapping onto timm's Xception
def keras_names(backbone: nn.Module) -> list[tuple[str, str, str]]:
    """``(Keras layer name, timm module, kind)`` for every layer with weights of timm's Xception.

    Keras names the entry flow ``block1_conv1/2``, each block's separable convolutions ``blockN_sepconvK``
    (timm's ``block{N-1}``), the exit flow ``block14_sepconv1/2``; the four 1x1 shortcut convolutions and
    their batch norms have no names of their own, so they are ``residual1..4`` here, in network order.
    """
    rows = [
        ("block1_conv1", "conv1", "conv"),
        ("block1_conv1_bn", "bn1", "bn"),
        ("block1_conv2", "conv2", "conv"),
        ("block1_conv2_bn", "bn2", "bn"),
    ]
    residual = 0
    for index in range(1, 13):
        block = getattr(backbone, f"block{index}")
        keras_block = f"block{index + 1}"
        separable = [i for i, m in enumerate(block.rep) if hasattr(m, "pointwise")]
        norms = [i for i, m in enumerate(block.rep) if isinstance(m, nn.BatchNorm2d)]
        for k, (conv, norm) in enumerate(zip(separable, norms), start=1):
            rows.append((f"{keras_block}_sepconv{k}", f"block{index}.rep.{conv}", "sepconv"))
            rows.append((f"{keras_block}_sepconv{k}_bn", f"block{index}.rep.{norm}", "bn"))
        if block.skip is not None:
            residual += 1
            rows.append((f"residual{residual}", f"block{index}.skip", "conv"))
            rows.append((f"residual{residual}_bn", f"block{index}.skipbn", "bn"))
    rows += [
        ("block14_sepconv1", "conv3", "sepconv"),
        ("block14_sepconv1_bn", "bn3", "bn"),
        ("block14_sepconv2", "conv4", "sepconv"),
        ("block14_sepconv2_bn", "bn4", "bn"),
    ]
    return rows


def _with_residual_names(layers: list[KerasLayer]) -> dict[str, KerasLayer]:
    """Keras layers by name, the unnamed shortcut layers (``conv2d_3``, ``batch_normalization_1``) renamed
    ``residualK`` / ``residualK_bn`` in the order the file lists them."""
    named: dict[str, KerasLayer] = {}
    counts = {"conv": 0, "bn": 0}
    for layer in layers:
        name = layer.name
        if not name.startswith("block"):
            counts[layer.kind] = counts.get(layer.kind, 0) + 1
            name = f"residual{counts[layer.kind]}" + ("_bn" if layer.kind == "bn" else "")
        if name in named:
            raise KerasImportError(f"layer {layer.name!r} appears twice")
        named[name] = layer
    return named


def map_to_timm(layers: list[KerasLayer], backbone: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state dict of ``backbone`` (timm's ``legacy_xception`` / ``keras_xception``) filled from Keras's layers.

    Raises :class:`KerasImportError` for a missing layer, an extra one, a wrong kind or a wrong shape.
    """
    named = _with_residual_names(layers)
    expected = keras_names(backbone)
    own = backbone.state_dict()
    state: dict[str, torch.Tensor] = {}
    mapping: dict[str, str] = {}
    for keras_name, module, kind in expected:
        layer = named.pop(keras_name, None)
        if layer is None:
            raise KerasImportError(f"layer {keras_name!r} (timm {module}) is missing from the Keras file")
        if layer.kind != kind:
            raise KerasImportError(f"layer {layer.name!r} is a {layer.kind} layer, timm's {module} needs {kind}")
        for variable, array in layer.variables.items():
            if (kind, variable) not in TORCH_NAMES:
                raise KerasImportError(f"layer {layer.name!r}: variable {variable!r} has no place in timm's {module}")
            suffix, axes = TORCH_NAMES[(kind, variable)]
            key = f"{module}.{suffix}"
            tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(axes) if axes else array)).float()
            if key not in own:
                raise KerasImportError(f"layer {layer.name!r}: timm's Xception has no {key}")
            if tuple(tensor.shape) != tuple(own[key].shape):
                raise KerasImportError(
                    f"layer {layer.name!r}: {variable} has shape {tuple(array.shape)}, "
                    f"timm's {key} needs {tuple(own[key].shape)} (after transposing {tuple(tensor.shape)})"
                )
            if key in state:
                raise KerasImportError(f"layer {layer.name!r}: {key} filled twice")
            state[key] = tensor
        mapping[layer.name] = module
    if named:
        extra = next(iter(named.values()))
        raise KerasImportError(
            f"layer {extra.name!r} ({extra.kind}) has no place in timm's Xception ({len(named)} extra layers)"
        )
    for key, value in own.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros_like(value)
    missing = sorted(set(own) - set(state))
    if missing:
        raise KerasImportError(f"timm's {missing[0]} got no value from the Keras file ({len(missing)} missing)")
    return state, mapping


def read_keras_backbone(path: str | os.PathLike) -> ImportedBackbone:
    """Keras's Xception in ``path`` as a state dict of :func:`coronet.models.keras_xception.keras_xception`."""
    from .keras_xception import keras_xception

    layers, container, member = read_keras_layers(path)
    state, mapping = map_to_timm(layers, keras_xception(num_classes=0, global_pool=""))
    return ImportedBackbone(state, mapping, container, member)


# --------------------------------------------------------------------------- writing


def count_values(state: dict[str, torch.Tensor]) -> int:
    """Parameters plus batch-norm statistics (Keras's count of a model: 20,861,480 for Xception without top)."""
    return sum(t.numel() for k, t in state.items() if not k.endswith("num_batches_tracked"))


def import_keras(source: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Read Keras's Xception from ``source``, write ``out`` (safetensors) and ``out`` with ``.json`` (its card).

    The card records the source file and its SHA-256, the output's SHA-256, the layer mapping and the number
    of values. The safetensors file holds only tensors and fixed metadata, so the same source always gives
    the same bytes. Returns the card.
    """
    from safetensors.torch import save_file

    source, out = Path(source), Path(out)
    imported = read_keras_backbone(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as partial:
        save_file(
            {k: v.contiguous() for k, v in sorted(imported.state_dict.items())},
            str(partial),
            # one metadata entry: safetensors writes several in hash order; the same source must give the same bytes
            metadata={"format": "pt"},
        )
    card = {
        "backbone": "keras_xception",
        "weights": "imagenet (Keras applications Xception, include_top=False)",
        "source": {"file": source.name, "sha256": file_sha256(source), "member": imported.member},
        "container": imported.container,
        "sha256": file_sha256(out),
        "values": count_values(imported.state_dict),
        "batchnorm_eps": 1e-3,
        "pooling": "TensorFlow 'same' max-pools",
        "input": "RGB in [-1, 1] (keras.applications.xception.preprocess_input)",
        "mapping": imported.mapping,
    }
    card_path(out).write_text(json.dumps(card, indent=2) + "\n")
    return card


def card_path(weights: str | os.PathLike) -> Path:
    """The JSON card written beside an imported weights file."""
    return Path(weights).with_suffix(".json")


__all__ = [
    "ImportedBackbone",
    "KerasImportError",
    "KerasLayer",
    "card_path",
    "count_values",
    "import_keras",
    "keras_names",
    "map_to_timm",
    "read_keras_backbone",
    "read_keras_layers",
]
