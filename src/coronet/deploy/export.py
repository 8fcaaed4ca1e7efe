"""ONNX export of a model directory, and the checked way to open the result.

``export_onnx`` writes ``model.onnx`` (by default into the model directory) with
one input and two outputs::

    image          float32 (batch, 1, S, S), pixels in [0, 1]  (S: the card's input_size)
    logits         float32 (batch, classes)
    probabilities  float32 (batch, classes), softmax of logits

A model validated with test-time augmentation (the card's ``inference.tta``) is
exported with it: the graph averages the softmax of the film and its mirror, and
``logits`` are then the log of those averaged probabilities.

The batch dimension is dynamic. Normalisation is inside the graph, exactly as
in the PyTorch model, so every runtime is fed the same tensor. Beside it goes
``model.onnx.json``, the export record: the ONNX file's SHA-256, the SHA-256 of
the safetensors weights it was exported from, the classes and input size.
:func:`open_session` refuses an ONNX file whose bytes or source weights do not
match (a damaged file, or an export left over from other weights), the same
rule ``modelio`` applies to the weights themselves.
"""

from __future__ import annotations

import json
import os
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..models.modeldir import ModelLoadError, card_tta, file_sha256, inference_model, load_model_dir, read_card

__all__ = ["ONNX_NAME", "export_onnx", "onnx_parity", "open_session", "record_path"]

ONNX_NAME = "model.onnx"
FORMAT = "coronet-onnx/1"
INPUT, OUTPUTS = "image", ("logits", "probabilities")


class _WithProbabilities(nn.Module):
    """The model's logits and their softmax, so ONNX users need no post-processing."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor):
        logits = self.model(image)
        return logits, torch.softmax(logits, dim=1)


def record_path(onnx_path: str | os.PathLike) -> Path:
    """Where the export record of ``onnx_path`` lives: the same name plus ``.json``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.name + ".json")


def export_onnx(
    model_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    opset: int = 18,
    model: nn.Module | None = None,
) -> Path:
    """Export the model directory's network to ONNX (dynamic batch); return the ONNX file's path.

    ``out`` defaults to ``MODEL_DIR/model.onnx``; the export record is written beside it
    (:func:`record_path`). Both are written to temporary names first and then renamed, so a
    failed export never leaves a half-written model (or a temporary file) behind. ``model`` is
    the directory's network already loaded with :func:`coronet.models.modeldir.load_model_dir`, to
    spare loading it again; by default it is loaded here.
    """
    if model is None:
        model, card = load_model_dir(model_dir)
        directory = read_card(model_dir)[1]
    else:
        card, directory = read_card(model_dir)
    out = Path(out) if out is not None else directory / ONNX_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    size = int(card["input_size"])
    example = torch.rand(2, 1, size, size)
    tmp = out.with_name(out.name + ".tmp")
    tmp_record = record_path(tmp)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter (deprecations in torch.export internals)
            network = _WithProbabilities(inference_model(model, card)).eval()  # the card's TTA included
            torch.onnx.export(
                network,
                (example,),
                str(tmp),
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=opset,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        os.replace(tmp, out)
        tmp_record.write_text(json.dumps(_export_record(out, card, opset), indent=2) + "\n")
        os.replace(tmp_record, record_path(out))
    finally:
        tmp.unlink(missing_ok=True)  # both gone already after a successful export
        tmp_record.unlink(missing_ok=True)
    return out


def _export_record(onnx_path: Path, card: dict, opset: int) -> dict:
    """The export record: the ONNX file's SHA-256 and the weights' it was exported from, what the graph takes and
    gives, and the exporter."""
    return {
        "format": FORMAT,
        "onnx_sha256": file_sha256(onnx_path),
        "weights_sha256": card["weights_sha256"],
        "name": card.get("name"),
        "classes": card["classes"],
        "input_size": int(card["input_size"]),
        "tta": card_tta(card),
        "input": INPUT,
        "outputs": list(OUTPUTS),
        "opset": opset,
        "torch": torch.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def open_session(model_dir: str | os.PathLike, onnx_path: str | os.PathLike | None = None, *, hint: str | None = None):
    """An ONNX Runtime CPU session for the model directory's export, after checking it is that model's.

    ``onnx_path`` defaults to ``MODEL_DIR/model.onnx``; any other ONNX file with a record of this format
    beside it (the int8 model of :mod:`coronet.deploy.runtimes`) is opened the same way. Raises
    :class:`ModelLoadError` when the file or its record is missing, the file's SHA-256 differs from the
    record, or the record's weights SHA-256 differs from the model card's (an export of other weights);
    ``hint`` says how to make the file (default: the ``coronet export`` command). The session applies all
    of ONNX Runtime's graph optimisations (``ORT_ENABLE_ALL``: constant folding, node fusions, the
    NCHWc layout, and for an int8 model the fusion of QuantizeLinear/DequantizeLinear pairs into
    integer kernels), which is ONNX Runtime's default, set here explicitly.
    """
    import onnxruntime as ort

    card, directory = read_card(model_dir)
    onnx_path = Path(onnx_path) if onnx_path is not None else directory / ONNX_NAME
    hint = hint or f"run `coronet export --onnx {directory}`"
    if not onnx_path.is_file():
        raise ModelLoadError(f"{onnx_path}: no ONNX export ({hint})")
    try:
        record = json.loads(record_path(onnx_path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"{record_path(onnx_path)}: missing or unreadable export record ({hint})") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ModelLoadError(f"{record_path(onnx_path)}: not a {FORMAT} record ({hint})")
    if file_sha256(onnx_path) != record.get("onnx_sha256"):
        raise ModelLoadError(f"{onnx_path}: SHA-256 differs from its export record (modified or swapped file)")
    if record.get("weights_sha256") != card.get("weights_sha256"):
        raise ModelLoadError(f"{onnx_path}: exported from other weights than {directory}'s ({hint})")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings are about graph optimisations, not the user
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # the CPU share PyTorch was given (``coronet serve`` divides the cores between its model threads), so
    # concurrent sessions do not oversubscribe the machine
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def onnx_parity(
    model_dir: str | os.PathLike,
    batch: np.ndarray,
    onnx_path: str | os.PathLike | None = None,
    *,
    model: nn.Module | None = None,
    session=None,
) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's probabilities on ``batch``.

    ``batch`` is the model input, ``(N, 1, S, S)`` float32 in [0, 1]. ``model`` (the directory's
    network, from :func:`coronet.models.modeldir.load_model_dir`) and ``session`` (from :func:`open_session`)
    may be passed in to reuse them across calls; by default each is loaded or opened here.
    """
    if model is None:
        model, _ = load_model_dir(model_dir)
    if session is None:
        session = open_session(model_dir, onnx_path)
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    with torch.inference_mode():
        expected = torch.softmax(
            inference_model(model, read_card(model_dir)[0])(torch.from_numpy(batch)), dim=1
        ).numpy()
    got = session.run([OUTPUTS[1]], {INPUT: batch})[0]
    return float(np.abs(got - expected).max())
