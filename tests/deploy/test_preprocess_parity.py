"""Crop and histogram equalisation change what predict, ONNX and serve compute exactly as they change what
training and validation feed the network: one film, every path, the same backbone input and probabilities."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from coronet.data.imageio import read_image, resize_square
from coronet.deploy.predict import Predictor
from coronet.models.coronet import build_model
from coronet.models.modeldir import ModelLoadError, load_model_dir, save_model_dir
from coronet.training.module import CoroNetModule
from coronet.training.profiles import get_profile

CLASSES = ("covid", "normal", "bacterial", "viral")
SIZE = 48


def film(path, seed=0):
    """A film-like image with structure everywhere (a gradient, blobs and noise), not square."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:90, 0:120]
    cx, cy = rng.uniform(20, 100), rng.uniform(15, 75)  # each film its own bright blob, slope and texture
    pixels = rng.uniform(10, 90) + rng.uniform(-1, 1) * x + 120 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 200)
    pixels += 40 * np.sin(x / rng.uniform(3, 9)) * (y > rng.uniform(20, 70)) + rng.normal(0, 12, x.shape)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def model_dir(out, crop, equalize):
    torch.manual_seed(0)
    model = build_model(len(CLASSES), "test_resnet", input_size=SIZE, hidden=16, crop=crop, equalize=equalize)
    with torch.no_grad():  # a random network's answers barely differ between films: make them differ
        model.head[2].weight.mul_(30)
        model.head[4].weight.mul_(30)
    return save_model_dir(model, out, classes=CLASSES, backbone="test_resnet", input_size=SIZE, hidden=16, dropout=0.5)


def backbone_input(model, images):
    """What the backbone of ``model`` receives for network input ``images`` (after its preprocessing)."""
    seen = []
    handle = model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    with torch.no_grad():
        probabilities = torch.softmax(model(images), 1)
    handle.remove()
    return seen[0], probabilities


@pytest.mark.parametrize(("crop", "equalize"), [("lungs", False), ("none", True), ("lungs", True)])
def test_predict_onnx_and_serve_see_what_validation_sees(tmp_path, crop, equalize):
    from fastapi.testclient import TestClient

    from coronet.deploy.serve import create_app

    paths = [film(tmp_path / f"film{k}.png", seed=k) for k in range(3)]
    directory = model_dir(tmp_path / "model", crop, equalize)
    model, card = load_model_dir(directory)
    assert card["preprocess"]["equalize"] == equalize and (card["preprocess"]["crop"] is not None) == (crop != "none")

    # training's path: the prepared cache (resize_square at preparation), then the module's validation batch hook
    cache = np.stack([resize_square(read_image(p), SIZE) for p in paths])
    module = CoroNetModule(
        get_profile("tiny").with_overrides(input_size=SIZE, crop=crop, equalize=equalize), model=model
    )
    module.trainer = SimpleNamespace(training=False)  # the hook as a Trainer calls it when validating
    batch = (torch.from_numpy(cache)[:, None], torch.zeros(3, dtype=torch.long), torch.arange(3), torch.full((3,), -1))
    validation_images, _, _ = module.on_after_batch_transfer(batch, 0)
    trained_input, trained_p = backbone_input(model.eval(), validation_images)

    predictor = Predictor(directory)
    predict_input, _ = backbone_input(
        predictor.model, torch.from_numpy(predictor.batch([read_image(p) for p in paths]))
    )
    assert torch.equal(trained_input, predict_input)  # the same backbone input, bit for bit
    assert not torch.allclose(trained_input, torch.from_numpy(cache[:, None] / np.float32(255)))  # it did something

    predicted = predictor.probabilities([read_image(p) for p in paths])
    assert np.abs(predicted - trained_p.numpy()).max() < 1e-6
    assert np.ptp(predicted, axis=0).max() > 0.01  # the films get different answers: agreement is not trivial

    from coronet.deploy.export import export_onnx

    export_onnx(directory)
    onnx = Predictor(directory, runtime="onnx").probabilities([read_image(p) for p in paths])
    assert np.abs(onnx - predicted).max() < 1e-4

    with TestClient(create_app(predictor=predictor, warm_up=False)) as client:
        for path, expected in zip(paths, predicted):
            answer = client.post("/v1/predict", files={"file": (path.name, path.read_bytes())}).json()
            served = np.array([answer["probabilities"][c] for c in CLASSES])
            assert np.abs(served - expected).max() < 1e-6


def test_a_card_that_drops_the_preprocessing_is_refused(tmp_path):
    import json

    directory = model_dir(tmp_path / "model", "lungs", True)
    card_path = directory / "model.json"
    card = json.loads(card_path.read_text())
    card["preprocess"] = {"crop": None, "equalize": False}
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="preprocess"):
        load_model_dir(directory)
