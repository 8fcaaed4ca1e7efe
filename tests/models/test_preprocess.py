"""Crop and histogram equalisation inside the network: exact, deterministic, recorded in the card."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coronet.models.preprocess import LUNG_BOX, FilmPreprocess, crop_box, equalize_histogram, parse_crop


def test_parse_crop_names_and_boxes():
    assert parse_crop("none") is None and parse_crop(None) is None
    assert parse_crop("lungs") == LUNG_BOX
    assert parse_crop("0.1, 0.2,0.9,0.8") == (0.1, 0.2, 0.9, 0.8)
    for bad in ("0.5,0.1,0.4,0.9", "0,0,1", "a,b,c,d", "0,0,1.2,1"):
        with pytest.raises(ValueError, match="crop"):
            parse_crop(bad)


def test_crop_keeps_exactly_the_box_and_resizes_it_back():
    images = torch.zeros(1, 1, 20, 20)
    images[..., 5:15, 10:20] = 1.0  # a bright block: the right half of the middle rows
    out = crop_box(images, (0.5, 0.25, 1.0, 0.75))  # that block exactly
    assert out.shape == images.shape and torch.all(out == 1.0)
    out = crop_box(images, (0.0, 0.25, 0.5, 0.75))  # the dark left half of the same rows
    assert torch.all(out == 0.0)


def test_equalisation_flattens_the_histogram_and_keeps_the_order_of_grey_levels():
    rng = np.random.default_rng(0)
    dark = np.clip(rng.normal(0.2, 0.05, (2, 1, 40, 40)), 0, 1).astype(np.float32)  # a narrow, dark histogram
    out = equalize_histogram(torch.from_numpy(dark))
    assert out.min() == 0.0 and out.max() == 1.0
    assert abs(float(out.mean()) - 0.5) < 0.05  # spread over the whole range
    flat_in, flat_out = dark[0].ravel(), out[0].numpy().ravel()
    order = np.argsort(flat_in, kind="stable")
    assert np.all(np.diff(flat_out[order]) >= -1e-6)  # monotone: brighter stays brighter
    assert torch.equal(out, equalize_histogram(torch.from_numpy(dark)))  # deterministic
    # each film on its own: the second film's result does not depend on the first
    assert torch.equal(out[1:], equalize_histogram(torch.from_numpy(dark[1:])))
    assert torch.all(equalize_histogram(torch.full((1, 1, 8, 8), 0.3)) == 0)  # a constant film


def test_a_network_applies_its_preprocessing_first_and_none_by_default():
    from coronet.models.coronet import build_model

    plain = build_model(4, "test_resnet", input_size=32, hidden=8)
    assert not plain.preprocess.active
    model = build_model(4, "test_resnet", input_size=32, hidden=8, crop="lungs", equalize=True)
    model.load_state_dict(plain.state_dict())  # no parameters or persistent buffers of its own
    film = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    expected = crop_box(equalize_histogram(film), LUNG_BOX)
    assert torch.equal(FilmPreprocess(LUNG_BOX, True)(film), expected)
    with torch.no_grad():
        assert torch.allclose(model.eval()(film), plain.eval()(expected), atol=1e-6)


def test_a_cropping_networks_heat_map_is_put_back_into_its_box():
    from coronet.deploy.explain import into_box

    heatmap = np.ones((20, 20), dtype=np.float32)
    placed = into_box(heatmap, (0.25, 0.5, 0.75, 1.0))
    assert placed.shape == (20, 20)
    assert np.all(placed[10:20, 5:15] == 1) and placed.sum() == 100  # the box only
