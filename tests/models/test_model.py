"""The model is the paper's Table II; weights load safely; the model directory refuses bad files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from coronet.models.coronet import WeightsError, build_model, count_parameters, create_backbone
from coronet.models.modeldir import ModelLoadError, load_model_dir, save_model_dir


@pytest.fixture(scope="module")
def coronet():
    torch.manual_seed(0)
    return build_model()


def test_paper_parameter_counts(coronet):
    backbone = count_parameters(coronet.backbone)
    assert backbone == {"trainable": 20_806_952, "batchnorm_statistics": 54_528}
    assert count_parameters(coronet)["trainable"] == 33_915_436
    assert count_parameters(coronet)["trainable"] + backbone["batchnorm_statistics"] == 33_969_964
    assert coronet.feature_shape == (2048, 5, 5)
    dense = coronet.head[2]
    assert (dense.in_features, dense.out_features) == (51_200, 256)
    assert sum(p.numel() for p in dense.parameters()) == 13_107_456
    assert sum(p.numel() for p in coronet.classifier.parameters()) == 1_028
    assert coronet.head[1].p == 0.5


def test_forward_shapes(coronet):
    coronet.eval()
    with torch.no_grad():
        gray = coronet(torch.rand(2, 1, 150, 150))
        rgb = coronet(torch.rand(2, 3, 150, 150))
    assert gray.shape == rgb.shape == (2, 4)


@pytest.mark.parametrize("backbone,size", [("resnet18", 64), ("test_resnet", 32)])
def test_other_backbones_derive_flatten_size(backbone, size):
    model = build_model(num_classes=3, backbone=backbone, input_size=size)
    channels, height, width = model.feature_shape
    assert model.head[2].in_features == channels * height * width
    assert model.eval()(torch.rand(1, 1, size, size)).shape == (1, 3)


def test_backbone_weights_from_file(tmp_path):
    source = create_backbone("test_resnet")
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.normal_()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "backbone.safetensors"))
    torch.save(state, tmp_path / "backbone.pt")
    for name in ("backbone.safetensors", "backbone.pt"):
        model = build_model(backbone="test_resnet", input_size=32, weights=tmp_path / name)
        for key, value in state.items():
            assert torch.equal(model.backbone.state_dict()[key], value), key


def test_weights_file_that_does_not_fit(tmp_path):
    save_file({"conv1.weight": torch.zeros(3, 3)}, str(tmp_path / "wrong.safetensors"))
    with pytest.raises(WeightsError, match="does not fit"):
        build_model(backbone="test_resnet", input_size=32, weights=tmp_path / "wrong.safetensors")
    with pytest.raises(WeightsError, match="not found"):
        build_model(backbone="test_resnet", input_size=32, weights=tmp_path / "missing.safetensors")


def test_pickle_weights_are_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="weights-only"):
        build_model(backbone="test_resnet", input_size=32, weights=tmp_path / "evil.pt")


def test_imagenet_offline_gives_clear_message(monkeypatch, tmp_path):
    """timm's real pretrained path, with the hub offline and an empty cache (no network wait)."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsError, match="--weights PATH"):
        build_model(backbone="resnet18", weights="imagenet", input_size=64)


def save_tiny(tmp_path):
    torch.manual_seed(1)
    model = build_model(num_classes=4, backbone="test_resnet", input_size=32, hidden=8)
    return model, save_model_dir(
        model,
        tmp_path / "model",
        classes=("covid", "normal", "bacterial", "viral"),
        backbone="test_resnet",
        input_size=32,
        hidden=8,
        dropout=0.5,
    )


def test_model_directory_round_trip(tmp_path):
    model, directory = save_tiny(tmp_path)
    loaded, card = load_model_dir(directory / "model.json")
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(model.eval()(x), loaded(x))
    assert card["classes"] == ["covid", "normal", "bacterial", "viral"] and "medical device" in card["notice"]


def test_model_directory_refuses_tampering(tmp_path):
    _, directory = save_tiny(tmp_path)
    weights = directory / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="SHA-256"):
        load_model_dir(directory)


def test_model_directory_refuses_pickle_and_mismatch(tmp_path):
    _, directory = save_tiny(tmp_path)
    card = json.loads((directory / "model.json").read_text())
    weights = directory / "model.safetensors"
    torch.save({"a": torch.zeros(1)}, weights)  # a pickle under the safetensors name, with a matching hash
    from coronet.models.modeldir import file_sha256

    card["weights_sha256"] = file_sha256(weights)
    (directory / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="not a safetensors"):
        load_model_dir(directory)
    save_file({"a": torch.zeros(1)}, str(weights))  # no network description
    card["weights_sha256"] = file_sha256(weights)
    (directory / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="carries no network description"):
        load_model_dir(directory)
    network = {
        "classes": card["classes"],
        "backbone": "test_resnet",
        "input_size": 32,
        "hidden": 8,
        "dropout": 0.5,
        "mean": 0.0,
        "std": 1.0,
    }
    save_file({"a": torch.zeros(1)}, str(weights), metadata={"coronet_network": json.dumps(network)})
    card["weights_sha256"] = file_sha256(weights)
    (directory / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="do not match"):
        load_model_dir(directory)
    with pytest.raises(ModelLoadError, match="not a model directory"):
        load_model_dir(tmp_path)


def test_edited_card_is_refused(tmp_path):
    _, directory = save_tiny(tmp_path)
    card_path = directory / "model.json"
    card = json.loads(card_path.read_text())
    swapped = dict(card, classes=["normal", "covid", "bacterial", "viral"])
    card_path.write_text(json.dumps(swapped))
    with pytest.raises(ModelLoadError, match="card differs from the trained network on classes"):
        load_model_dir(directory)
    card_path.write_text(json.dumps(dict(card, normalisation={"mean": 0.5, "std": 0.25})))
    with pytest.raises(ModelLoadError, match="mean .*std"):
        load_model_dir(directory)
    card_path.write_text(json.dumps({k: v for k, v in card.items() if k != "input_size"}))
    with pytest.raises(ModelLoadError, match="card lacks input_size"):
        load_model_dir(directory)
    card_path.write_text(json.dumps(dict(card, name="renamed", notice="edited")))  # descriptive fields are free
    assert load_model_dir(directory)[1]["name"] == "renamed"
