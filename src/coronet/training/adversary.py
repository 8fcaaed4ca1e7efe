"""A source adversary: features that cannot tell which collection a film came from, within each label.

Ganin & Lempitsky (ICML 2015) train a domain classifier on the features and reverse its gradient
into the feature extractor, so the features stop predicting the domain. Here the domain is the
film's source (``cohen``, ``kaggle``, ``ozturk``, ``actualmed`` ...), and since source and label are
correlated (every COVID-19 film is ieee8023's), the classifier is conditioned on the label (Li et
al., ECCV 2018): one softmax over sources per label, and only labels with two or more sources in the
training data contribute. Bacterial films from ieee8023 and from Kermany et al. teach the backbone
to drop what tells the two collections apart. The COVID-19 label contributes once a second collection
of positives trains (``radiography``: BIMCV films beside ieee8023's); with one source it is left alone,
so label information is not removed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times ``-weight`` backward."""

    @staticmethod
    def forward(ctx, features: torch.Tensor, weight: float) -> torch.Tensor:  # type: ignore[override]
        ctx.weight = weight
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return -ctx.weight * grad, None


def reverse_gradient(features: torch.Tensor, weight: float) -> torch.Tensor:
    """``features`` unchanged, with their gradient multiplied by ``-weight`` on the way back."""
    return GradientReversal.apply(features, weight)  # type: ignore[no-any-return]


def source_pairs(targets: np.ndarray, sources: np.ndarray, n_targets: int, n_sources: int) -> np.ndarray:
    """``(n_targets, n_sources)`` bool: the sources seen with each training target, for targets seen with two
    or more (the others have nothing to tell apart, and are all False)."""
    seen = np.zeros((n_targets, n_sources), dtype=bool)
    seen[np.asarray(targets), np.asarray(sources)] = True
    seen[seen.sum(1) < 2] = False
    return seen


def ramp(progress: float) -> float:
    """Ganin & Lempitsky's schedule of the reversal weight, 0 at the start of training to ~1 at the end."""
    return 2 / (1 + math.exp(-10 * min(max(progress, 0.0), 1.0))) - 1


class SourceAdversary(nn.Module):
    """Predicts a film's source from pooled backbone features, one softmax per training target.

    pairs: :func:`source_pairs`: the sources each target may come from (targets with fewer than two
    do not contribute).
    """

    def __init__(self, channels: int, pairs: np.ndarray, hidden: int = 256):
        super().__init__()
        self.register_buffer("pairs", torch.as_tensor(pairs, dtype=torch.bool), persistent=False)
        n_targets, n_sources = pairs.shape
        self.net = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_targets * n_sources)
        )

    pairs: torch.Tensor

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Source logits ``(N, n_sources)`` of each film's own target, ``-inf`` for sources its target never has."""
        pooled = features.float().mean(dim=(2, 3)) if features.ndim == 4 else features.float()
        n_targets, n_sources = self.pairs.shape
        logits = self.net(pooled).view(-1, n_targets, n_sources)[torch.arange(len(targets)), targets]
        return logits.masked_fill(~self.pairs[targets], float("-inf"))

    def loss(
        self, features: torch.Tensor, targets: torch.Tensor, sources: torch.Tensor, weight: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(cross-entropy over the films whose target has two or more sources, their accuracy)``.

        The features' gradient is reversed and scaled by ``weight``; the adversary's own
        parameters learn to predict the source. ``(0, None)`` when no film of the batch contributes.
        """
        contributing = self.pairs[targets].sum(1) >= 2
        if not bool(contributing.any()):
            return features.sum() * 0.0, None
        logits = self(reverse_gradient(features[contributing], weight), targets[contributing])
        truth = sources[contributing]
        loss = F.cross_entropy(logits, truth)
        return loss, (logits.argmax(1) == truth).float().mean()


__all__ = ["GradientReversal", "SourceAdversary", "ramp", "reverse_gradient", "source_pairs"]
