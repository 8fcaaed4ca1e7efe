"""Training on the real prepared data with a tiny network: resume equivalence, DDP coverage, run layout."""

from __future__ import annotations

import json
import logging

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from coronet.training.fit import fit_fold, run_cv
from coronet.training.profiles import get_profile


@pytest.fixture(scope="module")
def tiny():
    return get_profile("tiny")


@pytest.mark.slow  # trains or reads the real data
def test_fold_directory_and_predictions(prepared_dataset, tiny, tmp_path):
    result = fit_fold(prepared_dataset, 2, tmp_path, tiny, progress=False)
    manifest = pd.read_csv(prepared_dataset / "manifest.csv")
    expected = manifest[manifest.fold == 2]
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    assert sorted(predictions.path) == sorted(expected.path)
    assert {"path", "patient_id", "fold", "label", "prob_covid", "prob_normal", "prob_bacterial", "prob_viral"} <= set(
        predictions.columns
    )
    probs = predictions.filter(like="prob_")
    assert ((probs.sum(axis=1) - 1).abs() < 1e-4).all()
    assert result.accuracy == pytest.approx((predictions.pred == predictions.label).mean())
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.epoch.tolist() == [1, 2] and metrics.val_acc.notna().all()
    assert (tmp_path / "curves.png").stat().st_size > 1000
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


#: Every stateful lever of the fast recipe: a per-step schedule, a weight average, mixing, progressive resizing.
RECIPE = dict(
    optimizer="adamw",
    weight_decay=0.05,
    schedule="onecycle",
    warmup=0.25,
    label_smoothing=0.1,
    ema=0.9,
    mixup=0.4,
    cutmix=1.0,
    train_sizes=(24,),
    tta=True,
    bn_zero_init=True,
    bn_momentum=0.05,
    epochs=3,
)


@pytest.mark.slow  # trains or reads the real data
@pytest.mark.parametrize("recipe", [{}, RECIPE], ids=["paper-like", "fast-recipe"])
def test_resume_matches_uninterrupted_run(prepared_dataset, tiny, tmp_path, recipe):
    tiny = tiny.with_overrides(**recipe)
    fit_fold(prepared_dataset, 1, tmp_path / "straight", tiny, progress=False)
    fit_fold(prepared_dataset, 1, tmp_path / "resumed", tiny, progress=False, max_epochs=1)
    assert not (tmp_path / "resumed" / "model").exists()  # stopped after epoch 1
    assert pd.read_csv(tmp_path / "resumed" / "metrics.csv").epoch.tolist() == [1]
    checkpoint = torch.load(tmp_path / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    if recipe:  # the interrupted run's checkpoint holds the schedule's and the average's state
        assert checkpoint["lr_schedulers"] and any(k.startswith("ema.") for k in checkpoint["state_dict"])
    fit_fold(prepared_dataset, 1, tmp_path / "resumed", tiny, progress=False, resume=True)

    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "resumed" / "model" / "model.safetensors"))
    assert straight.keys() == resumed.keys() and len(straight) > 10
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    a = pd.read_csv(tmp_path / "straight" / "metrics.csv").drop(columns=["seconds", "train_images_per_s"])
    b = pd.read_csv(tmp_path / "resumed" / "metrics.csv").drop(columns=["seconds", "train_images_per_s"])
    pd.testing.assert_frame_equal(a, b)


class _Crash(pl.Callback):
    """Fails in the middle of epoch ``epoch`` (1-based), as a killed process would stop."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if trainer.current_epoch + 1 == self.epoch and batch_idx == 1:
            raise RuntimeError("simulated crash")


@pytest.mark.slow  # trains or reads the real data
def test_a_crashed_run_resumes_from_the_last_finished_epoch(prepared_dataset, tiny, tmp_path):
    config = tiny.with_overrides(**RECIPE)
    fit_fold(prepared_dataset, 1, tmp_path / "straight", config, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_fold(prepared_dataset, 1, tmp_path / "crashed", config, progress=False, callbacks=[_Crash(3)])
    checkpoint = torch.load(tmp_path / "crashed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1  # epochs 1 and 2 (0-based 0, 1) finished and saved
    assert sorted(p.name for p in (tmp_path / "crashed" / "checkpoints").iterdir()) == ["last.ckpt"]
    fit_fold(prepared_dataset, 1, tmp_path / "crashed", config, progress=False, resume=True)
    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "crashed" / "model" / "model.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key


@pytest.mark.slow  # trains or reads the real data
def test_a_run_that_checkpoints_every_second_epoch_resumes_from_the_last_one_written(prepared_dataset, tiny, tmp_path):
    config = tiny.with_overrides(**{**RECIPE, "epochs": 4}, checkpoint_every=2)
    fit_fold(prepared_dataset, 1, tmp_path / "straight", config, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_fold(prepared_dataset, 1, tmp_path / "crashed", config, progress=False, callbacks=[_Crash(4)])
    checkpoint = torch.load(tmp_path / "crashed" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1  # written after epoch 2, not after epoch 3 (0-based 2)
    fit_fold(prepared_dataset, 1, tmp_path / "crashed", config, progress=False, resume=True)
    straight = load_file(str(tmp_path / "straight" / "model" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "crashed" / "model" / "model.safetensors"))
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    a = pd.read_csv(tmp_path / "straight" / "metrics.csv").drop(columns=["seconds", "train_images_per_s"])
    b = pd.read_csv(tmp_path / "crashed" / "metrics.csv").drop(columns=["seconds", "train_images_per_s"])
    pd.testing.assert_frame_equal(a, b)  # epoch 3 trained again, with the same result


@pytest.mark.slow  # trains or reads the real data
def test_same_seed_same_result(prepared_dataset, tiny, tmp_path):
    fit_fold(prepared_dataset, 3, tmp_path / "a", tiny.with_overrides(epochs=1), progress=False)
    fit_fold(prepared_dataset, 3, tmp_path / "b", tiny.with_overrides(epochs=1), progress=False)
    a, b = (pd.read_csv(tmp_path / k / "predictions.csv") for k in "ab")
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.slow  # trains or reads the real data
def test_ddp_two_processes_predict_every_image_once(prepared_dataset, tiny, tmp_path):
    config = tiny.with_overrides(epochs=1, accelerator="cpu", devices="2", strategy="ddp_spawn")
    fit_fold(prepared_dataset, 4, tmp_path, config, progress=False)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    manifest = pd.read_csv(prepared_dataset / "manifest.csv")
    assert sorted(predictions.path) == sorted(manifest[manifest.fold == 4].path)
    assert not predictions.path.duplicated().any()
    assert set(predictions["rank"]) == {0, 1}  # both processes predicted a share


@pytest.mark.slow  # trains or reads the real data
def test_ddp_launched_as_users_launch_it(prepared_dataset, tmp_path):
    """`coronet cv ... --devices 2 --strategy ddp`: every rank re-runs the command; only rank 0 writes, the
    ranks agree on validation and resume, and the result is the single process's (each rank takes half the
    batch; BatchNorm statistics are per rank on the CPU, hence the tolerance)."""
    import subprocess
    import sys
    from pathlib import Path

    coronet = Path(sys.executable).with_name("coronet")
    common = [
        "cv",
        "--dataset",
        str(prepared_dataset),
        "--profile",
        "tiny",
        "--folds",
        "1",
        "--epochs",
        "1",
        "--accelerator",
        "cpu",
        "--no-progress",
        "--set",
        "dropout=0",
        "--set",
        "augment=false",
    ]
    runs = {}
    for name, extra in (
        ("ddp", ["--devices", "2", "--strategy", "ddp", "--batch-size", "4"]),
        ("single", ["--devices", "1", "--batch-size", "8"]),
    ):
        out = tmp_path / name
        done = subprocess.run(
            [str(coronet), *common, "--out", str(out), *extra],
            capture_output=True,
            text=True,
            timeout=600,
            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
        )
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
        runs[name] = pd.read_csv(out / "predictions.csv").set_index("path").sort_index()
    assert list(runs["ddp"].index) == list(runs["single"].index)
    assert set(runs["ddp"]["rank"]) == {0, 1}
    probs = [c for c in runs["ddp"].columns if c.startswith("prob_")]
    assert (runs["ddp"][probs] - runs["single"][probs]).abs().to_numpy().max() < 0.05
    # resumed under ddp: the finished fold is kept by every rank (no rank trains it again, none hangs)
    again = subprocess.run(
        [
            str(coronet),
            *common,
            "--out",
            str(tmp_path / "ddp"),
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--batch-size",
            "4",
            "--resume",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 0 and "already finished, kept" in again.stdout + again.stderr


@pytest.mark.slow  # trains or reads the real data
def test_cv_run_directory(prepared_dataset, tiny, tmp_path, caplog):
    config = tiny.with_overrides(epochs=1)
    run_cv(prepared_dataset, tmp_path, config, profile="tiny", folds=[1, 2], progress=False)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    manifest = pd.read_csv(prepared_dataset / "manifest.csv")
    assert sorted(predictions.path) == sorted(manifest[manifest.fold.isin([1, 2])].path)
    for name in ("config.json", "manifest.csv", "results.md", "fold-1/model/model.json", "fold-2/curves.png"):
        assert (tmp_path / name).is_file(), name
    # a resumed CV keeps finished folds
    caplog.set_level(logging.INFO, logger="coronet")
    run_cv(prepared_dataset, tmp_path, config, profile="tiny", folds=[1, 2], resume=True, progress=False)
    assert sum("already finished" in line for line in caplog.messages) == 2
    with pytest.raises(ValueError, match=r"other settings \(lr\)"):
        run_cv(prepared_dataset, tmp_path, config.with_overrides(lr=1.0), folds=[1], progress=False)


@pytest.mark.slow  # trains or reads the real data
def test_a_run_resumes_with_other_devices_precision_and_workers(prepared_dataset, tiny, tmp_path):
    """How a run is carried out may change between sittings (a CPU start, a GPU finish); what it learns may not."""
    config = tiny.with_overrides(epochs=2, precision="32")
    run_cv(prepared_dataset, tmp_path, config, profile="tiny", folds=[1], progress=False)
    elsewhere = config.with_overrides(precision="bf16-mixed", num_workers=1, devices="auto", checkpoint_every=2)
    run_cv(prepared_dataset, tmp_path, elsewhere, profile="tiny", folds=[1], resume=True, progress=False)
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["train"]["precision"] == "bf16-mixed" and record["train"]["num_workers"] == 1
    assert record["runtime_history"][0]["precision"] == "32"  # the earlier sitting is kept on record


@pytest.mark.slow  # trains or reads the real data
def test_the_saved_model_is_the_weight_average(prepared_dataset, tiny, tmp_path):
    from coronet.models.modeldir import load_model_dir
    from coronet.training.fit import CoroNetModule

    config = tiny.with_overrides(ema=0.5, epochs=1)
    fit_fold(prepared_dataset, 2, tmp_path, config, progress=False)
    module = CoroNetModule(config)
    module.load_state_dict(torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    saved, card = load_model_dir(tmp_path / "model")
    for key, value in saved.state_dict().items():
        assert torch.equal(value, module.ema.module.state_dict()[key]), key
    assert not all(torch.equal(v, module.model.state_dict()[k]) for k, v in saved.state_dict().items())
    assert card["training"]["config"]["ema"] == 0.5 and card["inference"] == {"tta": None}


@pytest.mark.parametrize(
    "avx512_bf16, amx, expected", [(False, False, "32-true"), (True, False, "bf16-mixed"), (False, True, "bf16-mixed")]
)
def test_auto_precision_follows_the_cpus_bf16_support(monkeypatch, tiny, avx512_bf16, amx, expected):
    from coronet.training import fit as training

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    config = tiny.with_overrides(precision="auto")
    assert training.resolve_precision(config) == expected
    assert expected in training.describe_precision(config)
    assert training.resolve_precision(config.with_overrides(precision="32")) == "32"


def test_auto_precision_without_the_probe_functions(monkeypatch, tiny):
    from coronet.training import fit as training

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    monkeypatch.delattr(torch.cpu, "_is_amx_tile_supported", raising=False)
    assert training.resolve_precision(tiny.with_overrides(precision="auto")) == "32-true"


def test_auto_precision_on_a_gpu(monkeypatch, tiny):
    from coronet.training import fit as training

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert training.resolve_precision(tiny.with_overrides(precision="auto")) == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert training.resolve_precision(tiny.with_overrides(precision="auto")) == "32-true"


@pytest.mark.parametrize("schedule", ["constant", "onecycle", "cosine"])
def test_schedules_warm_up_and_peak_at_lr(schedule):
    from coronet.training.module import lr_schedule
    from coronet.training.profiles import TrainConfig

    config = TrainConfig(lr=1e-3, schedule=schedule, warmup=0.2)
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = lr_schedule(optimizer, config, 100)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] < 0.2e-3 and max(rates) == pytest.approx(1e-3, rel=0.02)
    assert int(np.argmax(rates)) in range(15, 25)
    if schedule == "constant":
        assert rates[-1] == pytest.approx(1e-3)
    else:
        assert rates[-1] < 1e-4


def test_settings_parse_by_field_type():
    from coronet.training.profiles import get_profile, parse_settings

    parsed = parse_settings(
        [
            "lr=2e-3",
            "schedule=cosine",
            "vflip=false",
            "train_sizes=96,112",
            "epochs=4",
            "train_per_class=none",
            "ema=0.99",
        ]
    )
    assert parsed == {
        "lr": 2e-3,
        "schedule": "cosine",
        "vflip": False,
        "train_sizes": (96, 112),
        "epochs": 4,
        "train_per_class": None,
        "ema": 0.99,
    }
    config = get_profile("fast").with_overrides(**parsed)
    assert config.train_size(0) == 96 and config.train_size(1) == 112 and config.train_size(2) == 150
    for bad in ["nope=1", "lr", "epochs=x", "vflip=maybe"]:
        with pytest.raises(ValueError, match="--set"):
            parse_settings([bad])
    with pytest.raises(ValueError, match="schedule must be one of"):
        get_profile("fast").with_overrides(schedule="linear")


def test_an_unknown_logger_is_refused_and_csv_writes_lightnings_log(tmp_path):
    from coronet.layout import FoldDir
    from coronet.training.profiles import TrainConfig
    from coronet.training.trainer import lightning_logger

    with pytest.raises(ValueError, match="logger must be one of none, csv, tensorboard"):
        TrainConfig(logger="wandb")
    assert lightning_logger(TrainConfig(), FoldDir(tmp_path).logs) is False
    logger = lightning_logger(TrainConfig(logger="csv"), FoldDir(tmp_path).logs)
    logger.log_metrics({"val_acc": 0.5}, step=0)
    logger.save()
    assert "val_acc" in (tmp_path / "logs" / "metrics.csv").read_text()
