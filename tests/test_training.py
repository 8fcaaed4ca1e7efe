"""Training on the real prepared data with a tiny network: resume equivalence, DDP coverage, run layout."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from coronet.profiles import get_profile
from coronet.training import fit_fold, run_cv


@pytest.fixture(scope="module")
def tiny():
    return get_profile("tiny")


def test_fold_directory_and_predictions(prepared_dataset, tiny, tmp_path):
    result = fit_fold(prepared_dataset, 2, tmp_path, tiny, progress=False)
    manifest = pd.read_csv(prepared_dataset / "manifest.csv")
    expected = manifest[manifest.fold == 2]
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert sorted(predictions.path) == sorted(expected.path)
    assert {"path", "patient_id", "fold", "label", "prob_covid", "prob_normal", "prob_bacterial",
            "prob_viral"} <= set(predictions.columns)
    probs = predictions.filter(like="prob_")
    assert ((probs.sum(axis=1) - 1).abs() < 1e-4).all()
    assert result.accuracy == pytest.approx((predictions.pred == predictions.label).mean())
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.epoch.tolist() == [1, 2] and metrics.val_acc.notna().all()
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


def test_resume_matches_uninterrupted_run(prepared_dataset, tiny, tmp_path):
    fit_fold(prepared_dataset, 1, tmp_path / "straight", tiny, progress=False)
    fit_fold(prepared_dataset, 1, tmp_path / "resumed", tiny, progress=False, max_epochs=1)
    assert not (tmp_path / "resumed" / "model").exists()  # stopped after epoch 1
    assert pd.read_csv(tmp_path / "resumed" / "metrics.csv").epoch.tolist() == [1]
    fit_fold(prepared_dataset, 1, tmp_path / "resumed", tiny, progress=False, resume=True)

    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    a = pd.read_csv(tmp_path / "straight" / "metrics.csv").drop(columns=["seconds", "train_images_per_s"])
    b = pd.read_csv(tmp_path / "resumed" / "metrics.csv").drop(columns=["seconds", "train_images_per_s"])
    pd.testing.assert_frame_equal(a, b)


def test_same_seed_same_result(prepared_dataset, tiny, tmp_path):
    fit_fold(prepared_dataset, 3, tmp_path / "a", tiny.with_overrides(epochs=1), progress=False)
    fit_fold(prepared_dataset, 3, tmp_path / "b", tiny.with_overrides(epochs=1), progress=False)
    a, b = (pd.read_csv(tmp_path / k / "predictions.csv") for k in "ab")
    pd.testing.assert_frame_equal(a, b)


def test_ddp_two_processes_predict_every_image_once(prepared_dataset, tiny, tmp_path):
    config = tiny.with_overrides(epochs=1, accelerator="cpu", devices="2", strategy="ddp_spawn")
    fit_fold(prepared_dataset, 4, tmp_path, config, progress=False)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    manifest = pd.read_csv(prepared_dataset / "manifest.csv")
    assert sorted(predictions.path) == sorted(manifest[manifest.fold == 4].path)
    assert not predictions.path.duplicated().any()
    assert set(predictions["rank"]) == {0, 1}  # both processes predicted a share


def test_cv_run_directory(prepared_dataset, tiny, tmp_path):
    config = tiny.with_overrides(epochs=1)
    run_cv(prepared_dataset, tmp_path, config, profile="tiny", folds=[1, 2], progress=False, log=lambda *_: None)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    manifest = pd.read_csv(prepared_dataset / "manifest.csv")
    assert sorted(predictions.path) == sorted(manifest[manifest.fold.isin([1, 2])].path)
    for name in ("config.json", "manifest.csv", "results.md", "fold-1/model/model.json", "fold-2/curves.png"):
        assert (tmp_path / name).is_file(), name
    # a resumed CV keeps finished folds
    lines = []
    run_cv(prepared_dataset, tmp_path, config, profile="tiny", folds=[1, 2], resume=True, progress=False,
           log=lines.append)
    assert sum("already finished" in line for line in lines) == 2
    with pytest.raises(ValueError, match="other settings"):
        run_cv(prepared_dataset, tmp_path, config.with_overrides(lr=1.0), folds=[1], progress=False)
