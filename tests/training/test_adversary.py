"""The source adversary: gradient reversal, conditioned on the label, only where a label has two sources."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coronet.training.adversary import SourceAdversary, ramp, reverse_gradient, source_pairs


def test_gradient_reversal_flips_and_scales_the_gradient_at_the_features():
    features = torch.randn(5, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    weights = torch.randn(8)
    (reverse_gradient(features, 0.7) * weights).sum().backward()
    assert torch.allclose(features.grad, -0.7 * weights.expand(5, 8))
    assert torch.equal(reverse_gradient(features, 0.7), features)  # forward: the identity


def test_the_source_head_gradient_reaches_the_features_reversed():
    torch.manual_seed(0)
    pairs = source_pairs(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), n_targets=2, n_sources=2)
    adversary = SourceAdversary(6, pairs, hidden=4)
    features = torch.randn(4, 6, 2, 2, requires_grad=True)
    targets, sources = torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 1])
    loss, _ = adversary.loss(features, targets, sources, weight=0.5)
    reversed_grad = torch.autograd.grad(loss, features)[0]
    # the same head without the reversal: the adversary's own gradient at the features
    plain = torch.nn.functional.cross_entropy(adversary(features, targets), sources)
    plain_grad = torch.autograd.grad(plain, features, retain_graph=True)[0]
    assert torch.allclose(reversed_grad, -0.5 * plain_grad, atol=1e-7)
    # while the head's own parameters learn to predict the source (ordinary gradient)
    head_grad = torch.autograd.grad(adversary.loss(features, targets, sources, 0.5)[0], adversary.net[0].weight)[0]
    assert torch.allclose(head_grad, torch.autograd.grad(plain, adversary.net[0].weight)[0], atol=1e-7)


def test_only_labels_with_two_sources_contribute():
    # target 0 (covid) only from source 0; target 1 (bacterial) from sources 0 and 1
    pairs = source_pairs(np.array([0, 0, 1, 1]), np.array([0, 0, 0, 1]), n_targets=3, n_sources=2)
    assert pairs.tolist() == [[False, False], [True, True], [False, False]]
    adversary = SourceAdversary(4, pairs, hidden=4)
    features = torch.randn(3, 4, requires_grad=True)
    loss, accuracy = adversary.loss(features, torch.tensor([0, 0, 2]), torch.tensor([0, 0, 1]), weight=1.0)
    assert loss.item() == 0.0 and accuracy is None  # no film of a two-source label in the batch
    loss.backward()
    assert torch.all(features.grad == 0)  # COVID-19 features are left alone


def test_the_reversal_weight_ramps_up_from_zero():
    assert ramp(0.0) == 0.0 and ramp(1.0) == pytest.approx(1.0, abs=1e-4)
    assert 0 < ramp(0.1) < ramp(0.3) < 1


def test_bimcv_films_give_the_adversary_and_the_balance_a_second_source_of_covid(caplog):
    """Until BIMCV's films, every COVID-19 film was ieee8023's: the adversary had nothing to contrast within
    COVID-19. With them, covid is cohen vs radiography for both levers."""
    import logging

    import pandas as pd

    from coronet.training.fit import adversary_sources
    from coronet.training.module import group_weights

    rows = pd.DataFrame(
        {
            "source": ["cohen", "cohen", "cohen", "radiography", "kaggle", "cohen"],
            "label": ["covid", "covid", "covid", "covid", "bacterial", "bacterial"],
        }
    )
    caplog.set_level(logging.INFO, logger="coronet")
    codes, pairs = adversary_sources(rows, {"covid": 0, "normal": 1, "bacterial": 2, "viral": 3})
    assert codes.tolist() == [0, 0, 0, 1, 2, 0]  # cohen, radiography, kaggle
    assert pairs[0].tolist() == [True, True, False] and pairs[2].tolist() == [True, False, True]
    assert not pairs[1].any() and not pairs[3].any()
    assert "source adversary: covid from cohen, radiography; bacterial from cohen, kaggle" in caplog.text
    weights = group_weights(list(zip(rows.source, rows.label)), 1.0)
    # (radiography, covid) is a group of its own: its one film weighs as much as ieee8023's three together
    assert weights[3] == pytest.approx(3 * weights[0])
