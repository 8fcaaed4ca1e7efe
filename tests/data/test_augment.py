"""Batched augmentation: per-image seeding, exact geometry, and mixing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coronet.data.augment import (
    affine_matrices,
    augment_batch,
    augmentation_seed,
    draw_uniforms,
    mix_batch,
    resize_batch,
)


def films(n=4, size=24, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).random((n, 1, size, size), dtype=np.float32))


def test_an_image_looks_the_same_whatever_batch_it_is_in():
    images = films(4)
    seeds = torch.tensor([augmentation_seed(0, 3, row) for row in (10, 11, 12, 13)])
    settings = dict(rotation=30, shift=0.1, shear=5, zoom=0.1, hflip=True, vflip=True, brightness=0.2, contrast=0.2)
    together = augment_batch(images, seeds, 24, **settings)
    alone = augment_batch(images[2:3], seeds[2:3], 24, **settings)
    reordered = augment_batch(images[[3, 2]], seeds[[3, 2]], 24, **settings)
    assert torch.allclose(together[2], alone[0], atol=1e-6)
    assert torch.allclose(together[2], reordered[1], atol=1e-6)
    assert not torch.allclose(together[2], augment_batch(images[2:3], seeds[3:4], 24, **settings)[0])


def test_seed_is_a_function_of_seed_epoch_and_row():
    assert augmentation_seed(0, 1, 5) == augmentation_seed(0, 1, 5)
    assert len({augmentation_seed(0, e, r) for e in range(3) for r in range(50)}) == 150


def test_no_augmentation_is_the_identity():
    images = films(3)
    out = augment_batch(images, torch.arange(3), 24)
    assert torch.allclose(out, images, atol=1e-5)


def test_flips_are_exact_mirrors():
    images = films(64)
    uniforms = draw_uniforms(torch.arange(64))
    out = augment_batch(images, torch.arange(64), 24, hflip=True)
    flipped = uniforms[:, 5] < 0.5
    assert 10 < int(flipped.sum()) < 54
    assert torch.allclose(out[flipped], images[flipped].flip(-1), atol=1e-5)
    assert torch.allclose(out[~flipped], images[~flipped], atol=1e-5)


def test_shift_fills_black_and_moves_the_film():
    image = torch.ones(1, 1, 20, 20)
    uniforms = torch.tensor([[0.5, 1.0, 0.5, 0.5, 0.5, 1, 1, 0.5, 0.5]])  # the largest shift right, nothing else
    theta = affine_matrices(uniforms, shift=0.25)
    grid = torch.nn.functional.affine_grid(theta, [1, 1, 20, 20], align_corners=False)
    out = torch.nn.functional.grid_sample(image, grid, align_corners=False)
    assert torch.all(out[..., :, :4] < 0.01)  # a quarter of the width, uncovered on the left, is black
    assert torch.all(out[..., :, 6:] > 0.99)


def test_output_size_is_the_epochs_training_size():
    assert augment_batch(films(2, 32), torch.arange(2), 16, rotation=10).shape == (2, 1, 16, 16)
    assert resize_batch(films(2, 32), 16).shape == (2, 1, 16, 16)
    same = films(2, 16)
    assert resize_batch(same, 16) is same


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_mixing_is_seeded_and_keeps_the_pixel_budget(kind):
    images, labels = films(8), torch.arange(8) % 4
    settings = {kind: 1.0}
    a = mix_batch(images, labels, (0, 5, 0), **settings)
    b = mix_batch(images, labels, (0, 5, 0), **settings)
    assert torch.equal(a[0], b[0]) and a[3] == b[3]
    mixed, labels_a, labels_b, lam = a
    assert torch.equal(labels_a, labels) and sorted(labels_b.tolist()) == sorted(labels.tolist())
    assert 0 <= lam <= 1
    for k in range(8):  # every image is its own blend (or paste) with the one whose label is labels_b[k]
        partners = [j for j in range(8) if labels[j] == labels_b[k]]
        if kind == "mixup":
            assert any(torch.allclose(mixed[k], lam * images[k] + (1 - lam) * images[j], atol=1e-5) for j in partners)
        else:
            changed = ~torch.isclose(mixed[k], images[k])
            assert any(torch.equal(mixed[k][changed], images[j][changed]) for j in partners)
    assert mix_batch(images, labels, 0) == (images, labels, labels, 1.0)


ACQUISITION = dict(gamma=0.5, blur=1.5, noise=0.05, jpeg=30, resample=0.5)


@pytest.mark.parametrize("lever", ["gamma", "blur", "noise", "jpeg", "resample"])
def test_each_acquisition_lever_is_seeded_per_film_and_changes_about_half_of_them(lever):
    from coronet.data.augment import acquisition_batch

    images = films(16, size=32)
    seeds = torch.tensor([augmentation_seed(0, 1, row) for row in range(16)])
    setting = {lever: ACQUISITION[lever]}
    out = acquisition_batch(images, seeds, **setting)
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, acquisition_batch(images, seeds, **setting))  # deterministic
    assert torch.equal(out[5], acquisition_batch(images[5:6], seeds[5:6], **setting)[0])  # whatever the batch
    changed = [not torch.allclose(out[k], images[k], atol=1e-3) for k in range(16)]
    assert 2 <= sum(changed) <= 14  # each lever applies to a film with probability 1/2
    other = torch.tensor([augmentation_seed(0, 2, row) for row in range(16)])
    assert not torch.equal(out, acquisition_batch(images, other, **setting))  # another epoch, other draws


def test_acquisition_augmentation_off_is_the_identity_and_leaves_the_affine_draws_alone():
    from coronet.data.augment import acquisition_batch

    images, seeds = films(3), torch.tensor([1, 2, 3])
    assert acquisition_batch(images, seeds) is images
    before = draw_uniforms(seeds)
    acquisition_batch(images, seeds, **ACQUISITION)
    assert torch.equal(before, draw_uniforms(seeds))
