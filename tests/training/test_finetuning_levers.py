"""The settings that fine-tune a pretrained backbone: its own learning rate, a frozen start, the input scaling."""

from __future__ import annotations

import pytest
import torch

from coronet.models.coronet import build_model
from coronet.training.module import lr_schedule, make_optimizer
from coronet.training.profiles import TrainConfig, get_profile


def test_the_backbone_learns_at_its_fraction_of_the_heads_rate_under_every_schedule():
    model = build_model(backbone="test_resnet", input_size=32, hidden=8)
    for schedule in ("constant", "onecycle", "cosine"):
        config = TrainConfig(lr=1e-3, backbone_lr=0.1, schedule=schedule, warmup=0.2, weight_decay=0.05)
        optimizer = make_optimizer(model.named_parameters(), config)
        backbone = {id(p) for p in model.backbone.parameters()}
        scheduler = lr_schedule(optimizer, config, 50)
        peaks = [0.0] * len(optimizer.param_groups)
        for _ in range(50):
            peaks = [max(peak, group["lr"]) for peak, group in zip(peaks, optimizer.param_groups)]
            optimizer.step()
            scheduler.step()
        for group, peak in zip(optimizer.param_groups, peaks):
            in_backbone = {id(p) in backbone for p in group["params"]}
            assert len(in_backbone) == 1  # a group is all backbone or all head
            assert peak == pytest.approx(1e-4 if in_backbone.pop() else 1e-3, rel=0.02), schedule
            if all(p.ndim <= 1 for p in group["params"]):
                assert group["weight_decay"] == 0.0


def test_one_learning_rate_keeps_the_two_groups_earlier_checkpoints_hold():
    model = build_model(backbone="test_resnet", input_size=32, hidden=8)
    optimizer = make_optimizer(model.named_parameters(), TrainConfig(lr=1e-3))
    assert len(optimizer.param_groups) == 2


def test_input_scaling_reaches_the_network():
    assert TrainConfig().normalisation == {"mean": 0.0, "std": 1.0}  # the paper's notebook: pixels / 255
    symmetric = TrainConfig(input_scale="symmetric").normalisation
    model = build_model(backbone="test_resnet", input_size=32, **symmetric)
    assert float(model.mean) == 0.5 and float(model.std) == 0.5  # (x - 0.5) / 0.5: [0, 1] -> [-1, 1]
    with pytest.raises(ValueError, match="input_scale"):
        TrainConfig(input_scale="imagenet")


def test_freeze_epochs_must_fit_the_run():
    with pytest.raises(ValueError, match="freeze_epochs"):
        TrainConfig(epochs=2, freeze_epochs=3)
    with pytest.raises(ValueError, match="backbone_lr"):
        TrainConfig(backbone_lr=-1)


@pytest.mark.slow  # trains on the real data
def test_a_frozen_first_epoch_leaves_the_backbone_as_it_started(prepared_dataset, tmp_path):
    from safetensors.torch import load_file

    from coronet.training.fit import fit_fold

    config = get_profile("tiny").with_overrides(epochs=2, freeze_epochs=1, lr=1e-2)
    fit_fold(prepared_dataset, 1, tmp_path / "run", config, progress=False, max_epochs=1)
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    torch.manual_seed(config.seed)
    start = build_model(backbone="test_resnet", input_size=32, hidden=config.hidden)
    trained = {k.removeprefix("model."): v for k, v in checkpoint.items() if k.startswith("model.")}
    weights = [k for k in trained if k.startswith("backbone.") and k.endswith("weight") and trained[k].ndim == 4]
    assert weights and all(torch.equal(trained[k], start.state_dict()[k]) for k in weights)
    assert not torch.equal(trained["head.2.weight"], start.state_dict()["head.2.weight"])
    fit_fold(prepared_dataset, 1, tmp_path / "run", config, progress=False, resume=True)  # epoch 2 trains it
    final = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert any(not torch.equal(final[k], start.state_dict()[k]) for k in weights)
