"""The model directory: ``model.safetensors`` + ``model.json`` (the model card). Loading never unpickles.

The card says how to rebuild and use the network (backbone, input size, classes,
normalisation), where it came from (training data hash, profile, initial weights)
and how it did (metrics); it also records the weights file's SHA-256, so a
swapped or damaged weights file is refused instead of silently used.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import CoronetError
from ..layout import MODEL_CARD, MODEL_WEIGHTS, atomic_path, file_sha256
from ..versions import package_versions
from . import modelcard
from .coronet import CoroNet, build_model, with_tta

CARD_NAME, WEIGHTS_NAME = MODEL_CARD, MODEL_WEIGHTS  # the on-disk contract (coronet.layout)
FORMAT = "coronet-model/1"
#: The card fields that decide what the network computes and what its outputs mean. They are also
#: stored inside the weights file (whose SHA-256 the card holds), so an edited card -- classes
#: swapped, another normalisation -- is refused rather than silently mislabelling every film.
NETWORK_KEY = "coronet_network"
REQUIRED = ("classes", "backbone", "input_size", "hidden", "dropout", "weights_sha256")


class ModelLoadError(CoronetError, RuntimeError):
    """A model directory that is missing, malformed, tampered with, or does not match its card."""


def save_model_dir(
    model: CoroNet,
    out: str | os.PathLike,
    *,
    classes,
    backbone: str,
    input_size: int,
    hidden: int,
    dropout: float,
    extra: dict | None = None,
) -> Path:
    """Write ``out/model.safetensors`` and ``out/model.json``; return ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tta = ((extra or {}).get("inference") or {}).get("tta")
    network = {
        "classes": list(classes),
        "backbone": backbone,
        "input_size": input_size,
        "hidden": hidden,
        "dropout": dropout,
        "mean": float(model.mean),
        "std": float(model.std),
        "tta": tta,
        "preprocess": model.preprocess.describe(),
    }
    tmp = out / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={NETWORK_KEY: json.dumps(network)})
    card = {
        "format": FORMAT,
        "name": (extra or {}).get("name", f"coronet-{backbone}"),
        "version": __version__,
        "versions": package_versions(),  # what trained and saved it
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "classes": list(classes),
        "backbone": backbone,
        "input_size": input_size,
        "channels": 1,
        "hidden": hidden,
        "dropout": dropout,
        "normalisation": {"scale": 1 / 255, "mean": float(model.mean), "std": float(model.std)},
        # inside the network, before normalisation: crop to a box of the film, histogram equalisation
        "preprocess": model.preprocess.describe(),
        "weights_sha256": file_sha256(tmp),
        "notice": "Research software. Not a medical device; not for diagnosis.",
    }
    card.update({k: v for k, v in (extra or {}).items() if k != "name"})
    tmp_card = out / (CARD_NAME + ".tmp")
    tmp_card.write_text(json.dumps(card, indent=2) + "\n")
    # Both files are complete before either is renamed; the old card goes first, so an interruption
    # leaves a directory without a card ("not a model directory"), never new weights under an old card.
    (out / CARD_NAME).unlink(missing_ok=True)
    os.replace(tmp, out / WEIGHTS_NAME)
    os.replace(tmp_card, out / CARD_NAME)
    if file_sha256(out / WEIGHTS_NAME) != card["weights_sha256"]:  # the pair, checked as a reader will
        raise ModelLoadError(f"{out}: the weights changed while the model was being saved")
    modelcard.write(card, out)
    return out


def read_card(path: str | os.PathLike) -> tuple[dict, Path]:
    """(card, model directory) from a model directory or the path of its ``model.json``."""
    path = Path(path)
    directory = path.parent if path.name == CARD_NAME else path
    card_path = directory / CARD_NAME
    if not card_path.is_file():
        raise ModelLoadError(f"{directory}: not a model directory (no {CARD_NAME})")
    try:
        card = json.loads(card_path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{card_path}: not valid JSON ({error})") from error
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise ModelLoadError(f"{card_path}: not a {FORMAT} card")
    missing = [key for key in REQUIRED if key not in card]
    if missing:
        raise ModelLoadError(f"{card_path}: card lacks {', '.join(missing)}")
    return card, directory


def _check_card_matches_weights(card: dict, normalisation: dict, metadata: dict, weights: Path) -> None:
    try:
        stored = json.loads(metadata[NETWORK_KEY])
    except (KeyError, json.JSONDecodeError):
        raise ModelLoadError(
            f"{weights}: carries no network description (written by another tool or an older "
            "coronet); re-save it with coronet.models.modeldir.save_model_dir"
        ) from None
    stated = {key: card[key] for key in ("classes", "backbone", "input_size", "hidden", "dropout")}
    stated.update(mean=normalisation.get("mean", 0.0), std=normalisation.get("std", 1.0), tta=card_tta(card))
    stated["preprocess"] = card_preprocess(card)
    stored = {**stored, "preprocess": stored.get("preprocess") or NO_PREPROCESS}  # written before preprocessing
    differing = [key for key in stated if stated[key] != stored.get(key)]
    if differing:
        raise ModelLoadError(
            f"{weights.parent / CARD_NAME}: card differs from the trained network on "
            + ", ".join(f"{k} (card {stated[k]!r}, weights {stored.get(k)!r})" for k in differing)
        )


def annotate_card(model_dir: str | os.PathLike, **fields) -> dict:
    """Add or replace top-level entries of a model card (measurements made after training); atomic."""
    card, directory = read_card(model_dir)
    card.update(fields)
    with atomic_path(directory / CARD_NAME) as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n")
    modelcard.write(card, directory)
    return card


def card_tta(card: dict) -> str | None:
    """The test-time augmentation the model was validated with (``None`` or ``"hflip"``)."""
    return (card.get("inference") or {}).get("tta")


#: The card entry of a network without preprocessing (the paper's, and every model saved before it existed).
NO_PREPROCESS = {"crop": None, "equalize": False}


def card_preprocess(card: dict) -> dict:
    """The film preprocessing the network applies (``{"crop": box or None, "equalize": bool}``)."""
    return {**NO_PREPROCESS, **(card.get("preprocess") or {})}


def inference_model(model: torch.nn.Module, card: dict) -> torch.nn.Module:
    """The network as the card says to use it: wrapped for its test-time augmentation, if any.

    Prediction, evaluation, export and the service all go through this, so each gives the
    probabilities the model was validated with.
    """
    return with_tta(model, card_tta(card))


def load_model_dir(path: str | os.PathLike) -> tuple[CoroNet, dict]:
    """Rebuild the network described by the card, load its safetensors weights, return ``(model.eval(), card)``.

    The model is the bare network (for fine-tuning, Grad-CAM); :func:`inference_model` adds the
    card's test-time augmentation.
    """
    card, directory = read_card(path)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelLoadError(f"{directory}: {WEIGHTS_NAME} missing")
    if file_sha256(weights) != card.get("weights_sha256"):
        raise ModelLoadError(f"{weights}: SHA-256 differs from the card's weights_sha256 (modified or swapped file)")
    try:
        state = load_file(str(weights))
        with safe_open(str(weights), "pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as error:  # safetensors refuses anything that is not its own format
        raise ModelLoadError(f"{weights}: not a safetensors file ({type(error).__name__})") from error
    normalisation = card.get("normalisation", {})
    _check_card_matches_weights(card, normalisation, metadata, weights)
    model = build_model(
        num_classes=len(card["classes"]),
        backbone=card["backbone"],
        weights=None,
        input_size=card["input_size"],
        hidden=card["hidden"],
        dropout=card["dropout"],
        mean=normalisation.get("mean", 0.0),
        std=normalisation.get("std", 1.0),
        crop=card_preprocess(card)["crop"],
        equalize=card_preprocess(card)["equalize"],
    )
    try:
        model.load_state_dict(state)
    except RuntimeError as error:  # missing/unexpected keys or other shapes
        raise ModelLoadError(
            f"{weights}: weights do not match the card's network ({' '.join(str(error).split())[:300]})"
        ) from error
    return model.eval(), card
