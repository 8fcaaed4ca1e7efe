"""The DarkCovidNet-style peer network and `coronet compare` (tiny profile, real prepared data)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import timm
import torch

from coronet.evaluation.compare import compare
from coronet.layout import PREDICTIONS, read_predictions
from coronet.models.coronet import build_model, count_parameters
from coronet.models.darkcovidnet import DarkCovidNet
from coronet.tasks import get_task


def test_darkcovidnet_size_and_shapes():
    original = DarkCovidNet(num_classes=3, input_size=256)
    # Ozturk et al. report ~1.1M parameters (17 convolutions + one linear layer)
    assert 1_100_000 < sum(p.numel() for p in original.parameters()) < 1_200_000
    assert sum(isinstance(m, torch.nn.Conv2d) for m in original.modules()) == 17
    assert original(torch.rand(2, 3, 256, 256)).shape == (2, 3)
    backbone = timm.create_model("darkcovidnet", pretrained=False, num_classes=0, global_pool="")
    assert backbone(torch.rand(1, 3, 150, 150)).shape == (1, 3, 4, 4)
    model = build_model(4, backbone="darkcovidnet", input_size=150)
    assert model.feature_shape == (3, 4, 4)
    assert count_parameters(model)["trainable"] < 1_300_000
    with pytest.raises(ValueError, match="no pretrained"):
        timm.create_model("darkcovidnet", pretrained=True)


@pytest.mark.slow  # trains or reads the real data
def test_compare_table(prepared_dataset, tmp_path):
    table = compare(
        prepared_dataset,
        tmp_path,
        backbones=("test_resnet", "darkcovidnet"),
        profile="tiny",
        folds=[1, 2],
        n_bootstrap=20,
    )
    assert list(table.index) == ["test_resnet", "darkcovidnet"]
    for backbone in table.index:
        for task in ("4class", "3class", "binary"):
            title = get_task(task).title
            # the accuracy is that of the task's run: its predictions (both folds) against their labels, in percent
            predictions = read_predictions(tmp_path / backbone / task / PREDICTIONS)
            assert sorted(predictions["fold"].unique()) == [1, 2]
            expected = round(100 * float((predictions["pred"] == predictions["label"]).mean()), 2)
            assert table.loc[backbone, f"{title} accuracy"] == pytest.approx(expected, abs=1e-9)
            interval = table.loc[backbone, f"{title} 95% CI"]
            assert re.fullmatch(r"\d+\.\d-\d+\.\d", interval)
            low, high = map(float, interval.split("-"))
            assert 0 <= low <= high <= 100
    expected = count_parameters(build_model(4, backbone="darkcovidnet", input_size=32, hidden=16))["trainable"]
    assert table.loc["darkcovidnet", "parameters"] == expected
    assert (table["train images/s"] > 0).all()
    saved = pd.read_csv(tmp_path / "compare.csv", index_col=0)
    assert list(saved.index) == ["test_resnet", "darkcovidnet"]
    # the runs are ordinary run directories, on the same folds
    a = pd.read_csv(tmp_path / "test_resnet" / "binary" / "predictions.csv").sort_values("path")
    b = pd.read_csv(tmp_path / "darkcovidnet" / "binary" / "predictions.csv").sort_values("path")
    assert list(a.path) == list(b.path) and list(a.fold) == list(b.fold)
    with pytest.raises(ValueError, match="tasks"):
        compare(prepared_dataset, tmp_path, tasks=("3class",))
