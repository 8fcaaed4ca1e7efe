"""Which runtime predicts fastest on this machine without changing the answers: measured, checked, recorded.

``coronet runtimes --model MODEL_DIR --dataset DATASET --fold K`` (:func:`measure_runtimes`) tries every
runtime of :data:`RUNTIMES` on this machine:

* ``torch``: PyTorch in float32, channels_last: the reference;
* ``torch-bf16``: the backbone and head in bfloat16 (:func:`bf16_network`), only on a CPU with native bf16
  (AVX512-BF16 or AMX; elsewhere it is emulated and about 20x slower);
* ``onnx``: ONNX Runtime on the float32 export (``model.onnx``, exported here when missing or stale), with all
  of ONNX Runtime's graph optimisations;
* ``onnx-int8``: ONNX Runtime on a static int8 quantisation of that export (``model.int8.onnx``, built here by
  :func:`quantize_int8`, calibrated on the fold's *training* films).

For each it measures the latency of one film and the images/s at batch 32 (:func:`measure_speed`) and, with a
dataset, the accuracy check (:func:`accuracy_check`): on the fold's validation films, the 4-class accuracy
may change by at most :data:`TOLERANCE_POINTS` points against ``torch``, and at most :data:`MAX_CHANGED_PERCENT`
percent of the films may change their answer (answers changed both ways cancel in the accuracy); the answers
changed and the largest probability difference are recorded and printed. The fastest runtime that may be
chosen is the choice.

The record, ``MODEL_DIR/runtimes.json`` (written atomically, :data:`FORMAT`), holds every candidate's
figures, check and eligibility, the ranking and the choice, tied to the weights' SHA-256, to this machine
(CPU, core count, instruction sets, torch and ONNX Runtime versions) and to the SHA-256 of each ONNX file
it measured. ``coronet predict`` and ``coronet serve`` (``--runtime auto``, their default) load the choice
(:func:`choose_runtime`); a record for other weights, another machine or other files is ignored, and then
``torch`` runs, as it would without a record. ``--runtime NAME`` still overrides.

The modules, each depending only on those before it: :mod:`.cpu` (this machine's CPU and libraries), :mod:`.runners`
(the four runtimes loaded and run), :mod:`.record` (``runtimes.json``, and what ``--runtime auto`` runs),
:mod:`.measure` (the check films, the timing), :mod:`.int8` (the quantisation), :mod:`.choice` (the check,
the eligibility, the ranking). :class:`coronet.deploy.predict.Predictor` runs on a :class:`Runner` and asks
:func:`choose_runtime`; nothing here imports the predictor.
"""

from .choice import (
    LOW_PRECISION,
    MAX_CHANGED_PERCENT,
    ONNX_PARITY,
    TOLERANCE_POINTS,
    accuracy_check,
    format_record,
    measure_runtimes,
)
from .cpu import MACHINE_KEYS, machine, native_bf16
from .int8 import QUANTIZED_OPS, quantize_int8
from .measure import THROUGHPUT_BATCH, CheckFilms, fold_films, measure_speed
from .record import FORMAT, RECORD_NAME, RuntimeChoice, choose_runtime, read_record, write_record
from .runners import (
    INT8_NAME,
    REFERENCE,
    RUNTIMES,
    Runner,
    bf16_network,
    load_for_inference,
    load_runner,
    measure_hint,
    model_input,
)

__all__ = [
    "FORMAT",
    "INT8_NAME",
    "LOW_PRECISION",
    "MACHINE_KEYS",
    "MAX_CHANGED_PERCENT",
    "ONNX_PARITY",
    "QUANTIZED_OPS",
    "RECORD_NAME",
    "REFERENCE",
    "RUNTIMES",
    "THROUGHPUT_BATCH",
    "TOLERANCE_POINTS",
    "CheckFilms",
    "Runner",
    "RuntimeChoice",
    "accuracy_check",
    "bf16_network",
    "choose_runtime",
    "fold_films",
    "format_record",
    "load_for_inference",
    "load_runner",
    "machine",
    "measure_hint",
    "measure_runtimes",
    "measure_speed",
    "model_input",
    "native_bf16",
    "quantize_int8",
    "read_record",
    "write_record",
]
