"""Partial labels: a film known only to be one of several classes trains with -log(sum of their probabilities)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from coronet.tasks import label_targets
from coronet.training.module import partial_label_loss

CLASSES = ("covid", "normal", "bacterial", "viral")


def test_pneumonia_is_minus_log_of_bacterial_plus_viral():
    names, masks = label_targets(CLASSES, ["covid", "pneumonia", "viral"])
    assert names == list(CLASSES) + ["pneumonia"]
    logits = torch.tensor([[2.0, 0.5, -1.0, 0.3], [0.1, 0.2, 1.5, -0.7]], requires_grad=True)
    targets = torch.tensor([4, 0])  # "pneumonia", then "covid"
    loss = partial_label_loss(logits, targets, torch.as_tensor(masks))
    p = torch.softmax(logits.detach(), 1)
    expected = (-torch.log(p[0, 2] + p[0, 3]) - torch.log(p[1, 0])) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    # the pneumonia film pushes both bacterial and viral up (negative gradient) and the others down
    assert logits.grad[0, 2] < 0 and logits.grad[0, 3] < 0 and logits.grad[0, 0] > 0 and logits.grad[0, 1] > 0


def test_other_not_covid_is_minus_log_of_one_minus_p_covid_with_its_gradient():
    names, masks = label_targets(CLASSES, ["other", "normal"])
    assert names == list(CLASSES) + ["other"] and masks[-1].tolist() == [False, True, True, True]
    logits = torch.tensor([[1.2, -0.3, 0.4, 0.9], [0.5, 2.0, -1.0, 0.0], [-0.2, 0.1, 0.3, 3.0]], requires_grad=True)
    targets = torch.tensor([4, 4, 4])  # three "not COVID-19" films
    loss = partial_label_loss(logits, targets, torch.as_tensor(masks))
    p_covid = torch.softmax(logits.detach(), 1)[:, 0]
    assert loss.item() == pytest.approx((-torch.log(1 - p_covid)).mean().item(), rel=1e-6)
    loss.backward()
    # d/dz of -log(1 - p_c)/N: for the COVID logit p_c / N; for any other logit -p_j p_c / ((1 - p_c) N)
    p = torch.softmax(logits.detach(), 1)
    expected = -p * p[:, :1] / (1 - p[:, :1]) / 3
    expected[:, 0] = p[:, 0] / 3
    assert torch.allclose(logits.grad, expected, atol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_ordinary_labels_give_plain_cross_entropy(smoothing):
    _, masks = label_targets(CLASSES, list(CLASSES))
    logits, targets = torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 3, 1, 0])
    ours = partial_label_loss(logits, targets, torch.as_tensor(masks), smoothing)
    assert ours.item() == pytest.approx(F.cross_entropy(logits, targets, label_smoothing=smoothing).item(), rel=1e-6)


def test_labels_the_model_cannot_express_are_refused():
    with pytest.raises(ValueError, match="tuberculosis"):
        label_targets(CLASSES, ["covid", "tuberculosis"])
    with pytest.raises(ValueError, match="pneumonia"):  # a 2-class model has no members for it
        label_targets(("covid", "normal"), ["pneumonia"])
    # a 3-class model expresses "not COVID-19" as normal or pneumonia; a model without COVID-19 cannot
    assert label_targets(("covid", "normal", "pneumonia"), ["other"])[1][-1].tolist() == [False, True, True]
    with pytest.raises(ValueError, match="other"):
        label_targets(("normal", "bacterial"), ["other"])


def test_group_weights_balance_source_label_groups():
    from coronet.training.module import group_weights

    groups = [("cohen", "covid")] * 8 + [("cohen", "bacterial")] * 2
    full = group_weights(groups, 1.0)
    assert full.mean() == pytest.approx(1.0)
    assert full[:8].sum() == pytest.approx(full[8:].sum())  # each group weighs the same in total
    half = group_weights(groups, 0.5)
    assert half[8] / half[0] == pytest.approx(2.0)  # sqrt(8 / 2)
    assert (group_weights(groups, 0.0) == 1).all()


def test_weighted_loss_is_the_mean_of_weight_times_loss():
    _, masks = label_targets(CLASSES, list(CLASSES))
    logits, targets = torch.randn(4, 4, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2, 3])
    weights = torch.tensor([0.5, 1.5, 1.0, 1.0])
    each = F.cross_entropy(logits, targets, reduction="none")
    ours = partial_label_loss(logits, targets, torch.as_tensor(masks), weights=weights)
    assert ours.item() == pytest.approx((each * weights).mean().item(), rel=1e-6)
