"""The head alone on precomputed features: a LightningModule over a TensorDataset, trained by the fold's Trainer."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import TensorDataset

from coronet.layout import FoldDir
from coronet.models.coronet import build_model
from coronet.training.features import fit_head_on_features
from coronet.training.loaders import FoldLoaders
from coronet.training.module import FeatureHeadModule
from coronet.training.profiles import TrainConfig, get_profile
from coronet.training.trainer import fit_then_validate, fold_trainer

CLASSES = ("covid", "normal")


def blobs(n: int, seed: int) -> TensorDataset:
    """Two well-separated Gaussian blobs in 8 dimensions: ``(features, target, row index)``."""
    generator = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % 2
    features = torch.randn(n, 8, generator=generator) * 0.5 + (2.0 * targets[:, None] - 1)
    return TensorDataset(features, targets, torch.arange(n))


def train_head(out, config: TrainConfig, train_set, val_set, max_epochs=None, resume=False) -> nn.Module:
    out.mkdir(exist_ok=True)
    torch.manual_seed(0)  # the head's initialisation
    head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    task = FeatureHeadModule(config, head, predictions_path=out / "val-outputs.csv")
    epochs = min(max_epochs or config.epochs, config.epochs)
    trainer = fold_trainer(config, FoldDir(out), epochs, len(train_set), True, False, (), "32-true")
    ckpt = out / "checkpoints" / "last.ckpt"
    fit_then_validate(trainer, task, FoldLoaders(train_set, val_set, config), ckpt if resume else None, True)
    return head


@pytest.fixture
def config() -> TrainConfig:
    return TrainConfig(
        classes=CLASSES, epochs=6, batch_size=8, lr=1e-2, schedule="cosine", warmup=0.2, accelerator="cpu", seed=3
    )


def test_the_head_learns_a_separable_problem_on_a_tensor_dataset(tmp_path, config):
    train_head(tmp_path, config, blobs(48, 0), blobs(16, 1))
    metrics = pd.read_csv(tmp_path / "metrics.csv")  # the full training's EpochLog, one row per epoch
    assert metrics.epoch.tolist() == [1, 2, 3, 4, 5, 6]
    assert metrics.train_loss.iloc[-1] < 0.5 * metrics.train_loss.iloc[0]
    assert metrics.val_loss.iloc[-1] < metrics.val_loss.iloc[0] and metrics.val_acc.iloc[-1] == 1.0
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "checkpoints" / "last.ckpt").is_file()
    predictions = pd.read_csv(tmp_path / "val-outputs.csv")
    assert predictions["index"].tolist() == list(range(16))
    np.testing.assert_allclose(predictions[["prob_covid", "prob_normal"]].sum(axis=1), 1, atol=1e-6)


def test_a_repeated_or_resumed_head_training_gives_identical_weights(tmp_path, config):
    train_set, val_set = blobs(48, 0), blobs(16, 1)
    straight = train_head(tmp_path / "a", config, train_set, val_set).state_dict()
    again = train_head(tmp_path / "b", config, train_set, val_set).state_dict()
    train_head(tmp_path / "c", config, train_set, val_set, max_epochs=2)
    assert pd.read_csv(tmp_path / "c" / "metrics.csv").epoch.tolist() == [1, 2]
    resumed = train_head(tmp_path / "c", config, train_set, val_set, resume=True).state_dict()
    for key, value in straight.items():
        assert torch.equal(value, again[key]) and torch.equal(value, resumed[key]), key
    a, c = (pd.read_csv(tmp_path / run / "metrics.csv").drop(columns=["seconds", "train_images_per_s"]) for run in "ac")
    pd.testing.assert_frame_equal(a, c)


def films(n: int) -> tuple[np.ndarray, pd.DataFrame]:
    """A 32-pixel image cache (COVID-19 dark, normal bright) and its rows, folds 1 and 2."""
    rng = np.random.default_rng(0)
    labels = [CLASSES[i % 2] for i in range(n)]
    cache = np.stack([rng.integers(0, 90, (32, 32)) + (150 if label == "normal" else 0) for label in labels])
    rows = pd.DataFrame(
        {
            "path": [f"film-{i}.png" for i in range(n)],
            "patient_id": [f"p{i}" for i in range(n)],
            "fold": [1 + (i // 2) % 2 for i in range(n)],
            "label": labels,
            "cache_index": range(n),
        }
    )
    return cache.astype(np.uint8), rows


def test_the_fine_tune_on_features_resumes_where_it_stopped(tmp_path):
    config = get_profile("tiny").with_overrides(
        classes=CLASSES, train_layers="head", head_on_features=True, epochs=3, tta=True, lr=1e-3, accelerator="cpu"
    )
    cache, rows = films(40)
    (tmp_path / "data").mkdir()
    rows.to_csv(tmp_path / "data" / "manifest.csv", index=False)
    torch.manual_seed(0)
    model = build_model(num_classes=2, backbone="test_resnet", input_size=32, hidden=16)
    train, val = rows[rows.fold == 1], rows[rows.fold == 2]
    parts = (cache, train, val, {"covid": 0, "normal": 1}, np.eye(2, dtype=bool))

    def run(name, **options):
        (tmp_path / name).mkdir(exist_ok=True)  # fit_fold makes it
        return fit_head_on_features(
            tmp_path / "data", 2, tmp_path / name, config, copy.deepcopy(model), *parts, **options
        )

    straight = run("straight")
    assert run("resumed", max_epochs=1).predictions["path"].tolist() == val.path.tolist()
    assert not (tmp_path / "resumed" / "model").exists()  # stopped after epoch 1
    resumed = run("resumed", resume=True)
    assert straight.accuracy == resumed.accuracy and len(resumed.predictions) == len(val)
    pd.testing.assert_frame_equal(straight.predictions, resumed.predictions)
    weights = [load_file(str(tmp_path / name / "model" / "model.safetensors")) for name in ("straight", "resumed")]
    for key, value in weights[0].items():
        assert torch.equal(value, weights[1][key]), key
        if key.startswith("backbone."):
            assert torch.equal(value, model.state_dict()[key]), key  # the frozen backbone
    assert not torch.equal(weights[0]["head.2.weight"], model.state_dict()["head.2.weight"])
    assert pd.read_csv(tmp_path / "resumed" / "metrics.csv").epoch.tolist() == [1, 2, 3]
