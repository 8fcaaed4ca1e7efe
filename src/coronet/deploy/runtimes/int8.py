"""The ``onnx-int8`` runtime's model: a static int8 quantisation of the ONNX export, calibrated on training films.

Only convolutions are quantised (:data:`QUANTIZED_OPS`, weights per channel), except the first, which reads the
film: the film's preprocessing inside the graph (equalisation, crop), the normalisation, the first convolution,
the dense head, pooling and the softmax stay in float32.

The recipe was chosen on a trained legacy_xception fold model (fold 1 of the de-confounded dataset, 387
validation films): everything quantised with MinMax ranges changed 21 answers (-2.07 points); keeping the first
convolution and the dense head in float32 and taking percentile ranges changed 4 to 8 (-0.52 to +0.26 points,
with 40 to 300 calibration films and their batching). So on a model with many near-ties the int8 model passes
or fails the check narrowly: the check (:func:`coronet.deploy.runtimes.accuracy_check`) decides, per model.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ...models.modeldir import file_sha256, read_card
from ..export import FORMAT as ONNX_FORMAT
from ..export import ONNX_NAME, open_session, record_path
from .cpu import machine
from .runners import INT8_NAME

#: The only operators the int8 model quantises (all but the first, which reads the film); everything else
#: (preprocessing, normalisation, pooling, the dense head, softmax) stays float32.
QUANTIZED_OPS = ("Conv",)
#: The percentile of each activation's magnitudes that sets its int8 range.
PERCENTILE = 99.999


def quantize_int8(
    model_dir: str | os.PathLike,
    calibration: np.ndarray,
    *,
    out: str | os.PathLike | None = None,
    calibrated_on: dict | None = None,
) -> Path:
    """Build the static int8 model of the directory's ONNX export (``model.onnx``, which must be there and
    current) and write it (default ``MODEL_DIR/model.int8.onnx``) with its record beside it (the export's format,
    so :func:`coronet.deploy.export.open_session` checks it the same way); return its path.

    ``calibration`` is model input ``(M, 1, S, S)`` (the fold's training films): ONNX Runtime's percentile
    calibration (99.999th percentile of each activation's magnitudes, read a few films at a time so that
    memory stays small) sets the activations' ranges from them. QDQ format, activations uint8 and weights
    int8 per channel (7-bit weights, ``reduce_range``, on a CPU without VNNI, where 8-bit products can
    saturate); only :data:`QUANTIZED_OPS` are quantised, the first convolution excepted. Both files are
    written under temporary names and renamed. ``calibrated_on`` (the dataset and fold) goes into the record.
    """
    if not len(calibration):
        raise ValueError("int8 calibration needs at least one film")
    card, directory = read_card(model_dir)
    source = directory / ONNX_NAME
    open_session(directory, source)  # refuses a missing, damaged or stale export
    source_record = json.loads(record_path(source).read_text())
    out = Path(out) if out is not None else directory / INT8_NAME
    reduce_range = not machine()["avx512_vnni"]
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".int8-") as tmp:
        quantized = Path(tmp) / "int8.onnx"
        _quantize(_prepared(source, Path(tmp)), quantized, np.asarray(calibration, dtype=np.float32), reduce_range)
        record = _int8_record(source_record, quantized, card, reduce_range, len(calibration), calibrated_on)
        tmp_record = Path(tmp) / "int8.onnx.json"
        tmp_record.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(quantized, out)
        os.replace(tmp_record, record_path(out))
    return out


def _prepared(source: Path, tmp: Path) -> Path:
    """The export after ONNX Runtime's shape inference and constant folding (its advice before quantising), or the
    export itself where that optional step fails."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp / "prepared.onnx"
    try:
        quant_pre_process(str(source), str(prepared))
    except Exception:  # noqa: BLE001  (an optional step: quantise the export itself)
        return source
    return prepared


def _quantize(prepared: Path, quantized: Path, calibration: np.ndarray, reduce_range: bool) -> None:
    """ONNX Runtime's ``quantize_static`` with the recipe of :func:`quantize_int8`."""
    import contextlib
    import io

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    convolutions = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"]
    with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
        quantize_static(
            str(prepared),
            str(quantized),
            _CalibrationFilms(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=convolutions[:1],  # graph order is topological: the first reads the film
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            # one batch of films per pass (any calibrator: the ranges or histograms are merged), so only
            # one batch's intermediate tensors are ever held
            extra_options={"CalibStridedMinMax": 1, "CalibPercentile": PERCENTILE},
        )


class _CalibrationFilms:
    """ONNX Runtime's calibration data reader over ready model inputs, a few films per run; ``quantize_static``
    reads it one batch at a time (``set_range``, with ``CalibStridedMinMax`` 1)."""

    def __init__(self, films: np.ndarray, batch: int = 8):
        self.batches = [np.ascontiguousarray(films[k : k + batch]) for k in range(0, len(films), batch)]
        self.set_range(0, len(self.batches))

    def __len__(self) -> int:
        return len(self.batches)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._next = iter(self.batches[start_index:end_index])

    def get_next(self):
        batch = next(self._next, None)
        return None if batch is None else {"image": batch}


def _int8_record(
    source_record: dict, quantized: Path, card: dict, reduce_range: bool, films: int, calibrated_on: dict | None
) -> dict:
    """The int8 model's record: the export's fields, its own SHA-256, and how it was quantised and calibrated."""
    return {
        **{k: source_record.get(k) for k in ("name", "classes", "input_size", "tta", "input", "outputs", "opset")},
        "format": ONNX_FORMAT,
        "onnx_sha256": file_sha256(quantized),
        "weights_sha256": card["weights_sha256"],
        "quantization": {
            "kind": "static int8 (onnxruntime.quantization.quantize_static)",
            "from_onnx_sha256": source_record.get("onnx_sha256"),
            "format": "QDQ",
            "activations": "uint8",
            "weights": "int8, per channel",
            "reduce_range": reduce_range,
            "operators": list(QUANTIZED_OPS),
            "float32": ["the preprocessing", "the first convolution", "the dense head", "pooling", "softmax"],
            "calibration": {"method": f"percentile {PERCENTILE}", "films": int(films), **(calibrated_on or {})},
        },
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
