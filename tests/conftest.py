"""Shared fixtures: the real data directory (../shared/data by default) and tiny synthetic images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("CORONET_DATA") or REPO.parent / "shared" / "data").resolve()
#: The user's own coronet cache (where `make weights` puts Keras's ImageNet Xception), read before every test is
#: given an empty one of its own: a test never depends on what this machine happens to have imported.
USER_CACHE = Path(
    os.environ.get("CORONET_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "coronet"
)


@pytest.fixture(autouse=True)
def empty_coronet_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test sees an empty coronet cache (``$CORONET_CACHE``): ``--weights imagenet`` finds nothing imported."""
    cache = tmp_path_factory.mktemp("coronet-cache")
    monkeypatch.setenv("CORONET_CACHE", str(cache))
    return cache


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real public data; tests that need it are skipped (with the reason) when it is absent."""
    if not (DATA_DIR / "cohen-covid").is_dir():
        pytest.skip(f"real data not found at {DATA_DIR} (set CORONET_DATA)")
    return DATA_DIR


def write_xray(path: Path, seed: int = 0, size=(40, 32), mode: str = "L") -> Path:
    """A small random grayscale 'film' saved at ``path`` (format from the suffix)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0]), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


@pytest.fixture(scope="session")
def prepared_dataset(data_dir, tmp_path_factory) -> Path:
    """The paper's dataset prepared from the real data once per test session, with a 32x32 cache for tiny models."""
    from coronet.data.prepare import PrepareConfig, prepare_dataset

    out = tmp_path_factory.mktemp("prepared")
    prepare_dataset(data_dir, out, PrepareConfig(image_size=32))
    return out


@pytest.fixture(scope="session")
def tiny_cv_run(prepared_dataset, tmp_path_factory) -> Path:
    """A finished 4-fold, 1-epoch cross-validation run of the tiny network on the real prepared data."""
    from coronet.training.fit import run_cv
    from coronet.training.profiles import get_profile

    out = tmp_path_factory.mktemp("tiny-cv")
    run_cv(
        prepared_dataset,
        out,
        get_profile("tiny").with_overrides(epochs=1),
        profile="tiny",
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A random-weight test_resnet CoroNet (64 px input) saved as a model directory (tests of predict/serve)."""
    from deploy_helpers import make_model_dir

    return make_model_dir(tmp_path_factory.mktemp("tiny-model") / "model")


@pytest.fixture(scope="session")
def xray_paths(data_dir) -> list[Path]:
    """Six real films from the shared data: two COVID-19, two normal, two pneumonia."""
    from deploy_helpers import real_xrays

    return real_xrays(data_dir)
