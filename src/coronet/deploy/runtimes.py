"""Which runtime predicts fastest on this machine without changing the answers: measured, checked, recorded.

``coronet runtimes --model MODEL_DIR --dataset DATASET --fold K`` (:func:`measure_runtimes`) tries every
runtime of :data:`coronet.deploy.predict.RUNTIMES` on this machine:

* ``torch``: PyTorch in float32, channels_last: the reference;
* ``torch-bf16``: the backbone and head in bfloat16 (:func:`coronet.deploy.predict.bf16_network`), only on a
  CPU with native bf16 (AVX512-BF16 or AMX; elsewhere it is emulated and about 20x slower);
* ``onnx``: ONNX Runtime on the float32 export (``model.onnx``, exported here when missing or stale), with all
  of ONNX Runtime's graph optimisations;
* ``onnx-int8``: ONNX Runtime on a static int8 quantisation of that export (``model.int8.onnx``, built here by
  ONNX Runtime's ``quantize_static``, calibrated on the fold's *training* films). Only convolutions are
  quantised (:data:`QUANTIZED_OPS`, weights per channel), except the first, which reads the film: the film's
  preprocessing inside the graph (equalisation, crop), the normalisation, the first convolution, the dense
  head, pooling and the softmax stay in float32.

For each it measures the latency of one film and the images/s at batch 32 (:func:`measure_speed`) and, with a
dataset, the accuracy check (:func:`accuracy_check`): on the fold's validation films, the 4-class accuracy
may change by at most :data:`TOLERANCE_POINTS` points against ``torch``; the largest probability difference
is recorded and printed. A low-precision runtime (:data:`LOW_PRECISION`) is eligible only when its check
passed, so without a dataset only the float32 runtimes are (``onnx`` on the strength of the export's parity
check, < 1e-4 on random inputs). The fastest eligible runtime (lowest latency for one film, then the most
images/s) is the choice.

The record, ``MODEL_DIR/runtimes.json`` (written atomically, :data:`FORMAT`), holds every candidate's
figures, check and eligibility, the ranking and the choice, tied to the weights' SHA-256, to this machine
(CPU, core count, instruction sets, torch and ONNX Runtime versions) and to the SHA-256 of each ONNX file
it measured. ``coronet predict`` and ``coronet serve`` (``--runtime auto``, their default) load the choice
(:func:`choose_runtime`); a record for other weights, another machine or other files is ignored, and then
``torch`` runs, as it would without a record. ``--runtime NAME`` still overrides.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ..layout import MANIFEST
from ..models.modeldir import ModelLoadError, file_sha256, read_card
from .export import FORMAT as ONNX_FORMAT
from .export import ONNX_NAME, export_onnx, onnx_parity, open_session, record_path
from .predict import RUNTIMES, Predictor, model_input

logger = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "INT8_NAME",
    "LOW_PRECISION",
    "QUANTIZED_OPS",
    "RECORD_NAME",
    "TOLERANCE_POINTS",
    "CheckFilms",
    "RuntimeChoice",
    "accuracy_check",
    "choose_runtime",
    "fold_films",
    "format_record",
    "machine",
    "measure_hint",
    "measure_runtimes",
    "measure_speed",
    "native_bf16",
    "quantize_int8",
    "read_record",
    "write_record",
]

RECORD_NAME = "runtimes.json"
FORMAT = "coronet-runtimes/1"
INT8_NAME = "model.int8.onnx"
#: The largest change of the 4-class accuracy (percentage points) a low-precision runtime may make.
TOLERANCE_POINTS = 0.5
#: The runtimes whose answers may differ from float32 PyTorch's beyond rounding: each needs a passed check.
LOW_PRECISION = ("torch-bf16", "onnx-int8")
#: The only operators the int8 model quantises (all but the first, which reads the film); everything else
#: (preprocessing, normalisation, pooling, the dense head, softmax) stays float32.
QUANTIZED_OPS = ("Conv",)
#: The percentile of each activation's magnitudes that sets its int8 range.
PERCENTILE = 99.999
#: The export's parity with PyTorch (random inputs) that makes ``onnx`` eligible without a dataset.
ONNX_PARITY = 1e-4
REFERENCE = "torch"
THROUGHPUT_BATCH = 32
#: What must be the same for a record to hold on this machine (the thread counts are not: serve changes them).
MACHINE_KEYS = ("cpu", "cpus", "avx2", "avx512_vnni", "native_bf16", "torch", "onnxruntime")
RULE = (
    "the lowest latency for one film (then the most images/s at batch 32) among the runtimes that passed their "
    "accuracy check (4-class accuracy within {tolerance} points of float32 PyTorch on the fold's validation films); "
    "without a check, float32 runtimes only"
)


def measure_hint(model_dir: str | os.PathLike) -> str:
    return f"run `coronet runtimes --model {model_dir} --dataset DATASET --fold K`"


# ------------------------------------------------------------------------------------------------ machine


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): the probes of
    :func:`coronet.training.module.cpu_has_native_bf16`, without importing the training stack."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name)() for name in probes if hasattr(torch.cpu, name))


def _cpuinfo() -> tuple[str, set[str]]:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if flags and name:
                    break
    except OSError:
        pass
    return name, flags


def machine() -> dict:
    """This machine as a record needs it: CPU, cores, instruction sets, library versions, thread counts."""
    name, flags = _cpuinfo()
    try:
        import onnxruntime

        ort_version: str | None = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "cpu": name,
        "cpus": os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512_vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
        "native_bf16": native_bf16(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "torch_threads": torch.get_num_threads(),
    }


# ------------------------------------------------------------------------------------------------- films


@dataclass(frozen=True)
class CheckFilms:
    """A fold's films as model input: validation films with their class labels, and training films to calibrate."""

    images: np.ndarray  # (N, 1, S, S) float32 in [0, 1]: the fold's validation films labelled with a class
    labels: np.ndarray  # (N,) class indices
    calibration: np.ndarray  # (M, 1, S, S) float32: some of the fold's training films
    dataset: str
    fold: int


def fold_films(
    dataset: str | os.PathLike,
    fold: int,
    classes: Sequence[str],
    input_size: int,
    *,
    calibration_films: int = 100,
    seed: int = 0,
) -> CheckFilms:
    """Fold ``fold`` of a prepared dataset (``coronet data prepare``): its validation films (``fold == K``) whose
    label is one of ``classes`` (partial labels such as ``pneumonia`` are left out: they have no 4-class answer),
    and ``calibration_films`` of its training films (``fold != K``, drawn with ``seed``), read from the image
    cache and resized as ``predict`` resizes a film."""
    import pandas as pd

    from ..data.prepare import cache_size, load_cache

    dataset = Path(dataset)
    try:
        manifest = pd.read_csv(dataset / MANIFEST)
    except (OSError, ValueError) as error:
        raise ValueError(f"{dataset}: no readable {MANIFEST} (a prepared dataset: coronet data prepare)") from error
    missing = {"fold", "cache_index", "label"} - set(manifest.columns)
    if missing:
        raise ValueError(f"{dataset / MANIFEST}: no column(s) {', '.join(sorted(missing))}")
    folds = sorted(int(f) for f in manifest["fold"].dropna().unique())
    if fold not in folds:
        raise ValueError(f"{dataset}: no fold {fold} (folds: {', '.join(map(str, folds))})")
    validation = manifest[(manifest["fold"] == fold) & manifest["label"].isin(list(classes))]
    training = manifest[manifest["fold"] != fold]
    if validation.empty:
        raise ValueError(f"{dataset}: fold {fold} has no validation film labelled {', '.join(classes)}")
    size = cache_size(dataset, input_size)
    cache = load_cache(dataset, size)

    def films(rows) -> np.ndarray:
        images = np.asarray(cache[rows["cache_index"].to_numpy()])
        if size == input_size:
            return (images[:, None] / np.float32(255.0)).astype(np.float32)
        return model_input(list(images), input_size)

    picked = np.random.default_rng(seed).permutation(len(training))[: max(0, calibration_films)]
    return CheckFilms(
        images=films(validation),
        labels=validation["label"].map({c: k for k, c in enumerate(classes)}).to_numpy(dtype=np.int64),
        calibration=films(training.iloc[np.sort(picked)]),
        dataset=str(dataset),
        fold=int(fold),
    )


# ------------------------------------------------------------------------------------------ the check


def accuracy_check(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray, tolerance: float = TOLERANCE_POINTS
) -> dict:
    """Does ``candidate`` (probabilities, ``(N, classes)``) answer as ``reference`` does on films labelled ``labels``?

    It passes when its accuracy differs from the reference's by at most ``tolerance`` percentage points
    and every probability is finite. Also reported: how many films change their predicted class and the
    largest absolute probability difference.
    """
    reference, candidate = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    labels = np.asarray(labels)
    if candidate.shape != reference.shape or reference.shape[0] != labels.shape[0] or not len(labels):
        raise ValueError(f"shapes differ: reference {reference.shape}, candidate {candidate.shape}, {labels.shape}")
    films = len(labels)
    right_reference = int((reference.argmax(1) == labels).sum())
    right = int((candidate.argmax(1) == labels).sum())
    finite = bool(np.isfinite(candidate).all())
    # in whole films, so that 1 film in 200 (exactly 0.5 points) is not lost to rounding
    within = abs(right - right_reference) * 100 <= tolerance * films + 1e-9
    return {
        "films": films,
        "reference_accuracy": 100 * right_reference / films,
        "accuracy": 100 * right / films,
        "change_points": 100 * (right - right_reference) / films,
        "changed_predictions": int((candidate.argmax(1) != reference.argmax(1)).sum()),
        "max_probability_difference": float(np.abs(candidate - reference).max()) if finite else float("inf"),
        "tolerance_points": tolerance,
        "passed": finite and within,
    }


def _probabilities(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([run(images[start : start + batch]) for start in range(0, len(images), batch)])


def measure_speed(run: Callable[[np.ndarray], np.ndarray], films: np.ndarray, repeats: int = 10) -> dict:
    """Latency of one film (the model call on a ready input, median of ``repeats``) and images/s at batch 32
    (best of ``max(3, repeats // 2)`` batches), after a warm-up."""
    one = films[:1]
    batch = np.ascontiguousarray(np.resize(films, (THROUGHPUT_BATCH, *films.shape[1:])))  # films repeated to 32

    def timed(inputs: np.ndarray, times: int) -> list[float]:
        seconds = []
        for _ in range(times):
            start = time.perf_counter()
            run(inputs)
            seconds.append(time.perf_counter() - start)
        return seconds

    timed(batch, 1)
    timed(one, 2)
    latency = statistics.median(timed(one, max(1, repeats)))
    best = min(timed(batch, max(3, repeats // 2)))
    return {
        "latency_ms": round(latency * 1000, 3),
        "images_per_s": round(THROUGHPUT_BATCH / best, 2),
        "repeats": max(1, repeats),
    }


# ------------------------------------------------------------------------------------------------- int8


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
    written under temporary names and renamed.

    The recipe was chosen on a trained legacy_xception fold model (fold 1 of the de-confounded dataset, 387
    validation films): everything quantised with MinMax ranges changed 21 answers (-2.07 points); keeping
    the first convolution and the dense head in float32 and taking percentile ranges changed 4 to 8
    (-0.52 to +0.26 points, with 40 to 300 calibration films and their batching). So on a model with many
    near-ties the int8 model passes or fails the 0.5-point check narrowly: the check decides, per model.
    """
    import contextlib
    import io

    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not len(calibration):
        raise ValueError("int8 calibration needs at least one film")
    card, directory = read_card(model_dir)
    source = directory / ONNX_NAME
    open_session(directory, source)  # refuses a missing, damaged or stale export
    source_record = json.loads(record_path(source).read_text())
    out = Path(out) if out is not None else directory / INT8_NAME
    reduce_range = not machine()["avx512_vnni"]
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:  # shape inference and constant folding first, as ONNX Runtime recommends
            quant_pre_process(str(source), str(prepared))
        except Exception:  # noqa: BLE001  (an optional step: quantise the export itself)
            prepared = source
        quantized = Path(tmp) / "int8.onnx"
        convolutions = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Conv"]
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
            quantize_static(
                str(prepared),
                str(quantized),
                _CalibrationFilms(np.asarray(calibration, dtype=np.float32)),
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
        record = _int8_record(source_record, quantized, card, reduce_range, len(calibration), calibrated_on)
        tmp_record = Path(tmp) / "int8.onnx.json"
        tmp_record.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(quantized, out)
        os.replace(tmp_record, record_path(out))
    return out


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


# ---------------------------------------------------------------------------------------------- record


def read_record(model_dir: str | os.PathLike) -> dict | None:
    """The directory's ``runtimes.json`` as written (None when there is none; ``ValueError`` when unreadable)."""
    path = read_card(model_dir)[1] / RECORD_NAME
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable ({' '.join(str(error).split())})") from error
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} record")
    return record


def write_record(model_dir: str | os.PathLike, record: dict) -> Path:
    """Write ``runtimes.json`` atomically (a temporary file in the same directory, then renamed); return its path."""
    directory = read_card(model_dir)[1]
    path = directory / RECORD_NAME
    handle = tempfile.NamedTemporaryFile("w", dir=directory, prefix=f".{RECORD_NAME}.", suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(json.dumps(record, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    finally:
        Path(handle.name).unlink(missing_ok=True)
    return path


def _onnx_file(runtime: str) -> str | None:
    return {"onnx": ONNX_NAME, "onnx-int8": INT8_NAME}.get(runtime)


def _recorded_sha256(directory: Path, runtime: str) -> str | None:
    """The SHA-256 the export record beside the runtime's ONNX file gives (the file itself is checked on opening)."""
    name = _onnx_file(runtime)
    if name is None:
        return None
    try:
        return json.loads(record_path(directory / name).read_text()).get("onnx_sha256")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None


@dataclass(frozen=True)
class RuntimeChoice:
    """The runtimes to try in order (the last is always ``torch``), why, and the record used (None: none)."""

    ranking: tuple[str, ...]
    reason: str
    record: str | None


def choose_runtime(model_dir: str | os.PathLike, card: dict | None = None) -> RuntimeChoice:
    """What ``--runtime auto`` runs: the record's ranking when ``runtimes.json`` is valid here, else ``torch``.

    Valid: readable, of :data:`FORMAT`, for the card's weights (SHA-256), measured on this machine
    (:data:`MACHINE_KEYS`); a ranked ONNX runtime whose file is no longer the one measured (its export
    record's SHA-256) is dropped from the ranking. ``reason`` says which of these decided.
    """
    card_found, directory = read_card(model_dir)
    card = card or card_found
    hint = measure_hint(directory)
    path = directory / RECORD_NAME
    try:
        record = read_record(directory)
    except ValueError as error:
        return RuntimeChoice((REFERENCE,), f"{error}: ignored; torch ({hint})", None)
    if record is None:
        return RuntimeChoice((REFERENCE,), f"no {RECORD_NAME}: torch, the default ({hint})", None)
    if record.get("weights_sha256") != card.get("weights_sha256"):
        return RuntimeChoice((REFERENCE,), f"{path} was measured for other weights: ignored; torch ({hint})", None)
    here, there = machine(), record.get("machine") or {}
    differ = [key for key in MACHINE_KEYS if there.get(key) != here.get(key)]
    if differ:
        what = ", ".join(f"{key} {there.get(key)!r} there, {here.get(key)!r} here" for key in differ)
        return RuntimeChoice((REFERENCE,), f"{path} was measured on another machine ({what}): ignored; torch", None)
    candidates = record.get("candidates") or {}
    ranking, dropped = [], []
    for runtime in record.get("ranking") or []:
        entry = candidates.get(runtime) or {}
        if runtime not in RUNTIMES or not entry.get("eligible") or runtime in ranking:
            continue
        if _onnx_file(runtime) and _recorded_sha256(directory, runtime) != entry.get("sha256"):
            dropped.append(f"{_onnx_file(runtime)} is not the file measured")
            continue
        ranking.append(runtime)
    if REFERENCE not in ranking:
        ranking.append(REFERENCE)
    chosen = record.get("chosen")
    if ranking[0] == chosen:
        reason = f"the fastest runtime that passed its check ({path}, {record.get('created')})"
    else:
        reason = f"{path} chose {chosen}, but {'; '.join(dropped) or 'it is not eligible'}: the next in its ranking"
    return RuntimeChoice(tuple(ranking), reason, str(path))


# ----------------------------------------------------------------------------------------------- measure


def _ensure_export(directory: Path, model) -> dict:
    """Export ``model.onnx`` when it is missing or not this model's; return its parity with PyTorch."""
    try:
        session = open_session(directory)
        exported = False
    except ModelLoadError as why:
        logger.info(f"exporting {directory / ONNX_NAME} ({' '.join(str(why).split())})")
        export_onnx(directory, model=model)
        session, exported = open_session(directory), True
    size = int(read_card(directory)[0]["input_size"])
    rng = np.random.default_rng(0)
    worst = max(
        onnx_parity(directory, rng.random((n, 1, size, size), dtype=np.float32), model=model, session=session)
        for n in (1, 3)
    )
    return {"exported_now": exported, "parity_random_inputs": worst}


def measure_runtimes(
    model_dir: str | os.PathLike,
    dataset: str | os.PathLike | None = None,
    fold: int | None = None,
    *,
    repeats: int = 10,
    calibration_films: int = 100,
    calibration: np.ndarray | None = None,
    runtimes: Sequence[str] = RUNTIMES,
    tolerance: float = TOLERANCE_POINTS,
    write: bool = True,
) -> dict:
    """Measure (and with ``dataset`` and ``fold``, check) each runtime of ``runtimes`` on this machine, choose,
    and write ``MODEL_DIR/runtimes.json`` (unless ``write`` is false); return the record.

    Without a dataset the int8 model can still be built from ``calibration`` (ready model input; the
    benchmark's real films), but with no check it is not eligible, like ``torch-bf16``. ``tolerance``: the
    accuracy change allowed, in points (default :data:`TOLERANCE_POINTS`; the command line keeps it);
    ``repeats``: timed runs per figure (:func:`measure_speed`).
    """
    directory = read_card(model_dir)[1]
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime(s) {', '.join(unknown)}; choose from {', '.join(RUNTIMES)}")
    if (dataset is None) != (fold is None):
        raise ValueError("the accuracy check needs both a dataset and a fold")
    reference = Predictor(directory, runtime=REFERENCE)
    card, size = reference.card, reference.input_size
    films = None
    if dataset is not None and fold is not None:
        films = fold_films(dataset, fold, reference.classes, size, calibration_films=calibration_films)
        calibration = films.calibration
        logger.info(
            f"check: fold {fold} of {dataset}: {len(films.labels)} validation films; int8 calibrated on "
            f"{len(calibration)} of its training films"
        )
    if films is not None:
        speed_input = films.images[:THROUGHPUT_BATCH]
    else:
        speed_input = np.random.default_rng(0).random((THROUGHPUT_BATCH, 1, size, size), dtype=np.float32)
    expected = _probabilities(reference.run, films.images) if films is not None else None

    export: dict | None = None
    if any(_onnx_file(r) for r in runtimes):
        try:
            export = _ensure_export(directory, reference.model)
        except ImportError as error:
            export = {"error": f"ONNX Runtime is not installed ({error}): pip install 'coronet[onnx]'"}

    candidates = {
        runtime: _measure_candidate(
            runtime, directory, reference, films, expected, calibration, export, speed_input, repeats, tolerance
        )
        for runtime in runtimes
    }
    ranking = sorted(
        (r for r, e in candidates.items() if e.get("eligible")),
        key=lambda r: (candidates[r]["latency_ms"], -candidates[r]["images_per_s"]),
    )
    if REFERENCE not in ranking:  # torch not among the runtimes asked for: it is still the fallback
        ranking.append(REFERENCE)
    record = {
        "format": FORMAT,
        "model": card.get("name"),
        "weights_sha256": card["weights_sha256"],
        "machine": machine(),
        "check": None if films is None or expected is None else _check_record(films, expected, tolerance),
        "onnx_export": export,
        "candidates": candidates,
        "rule": RULE.format(tolerance=tolerance),
        "ranking": ranking,
        "chosen": ranking[0],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if write:
        write_record(directory, record)
    return record


def _measure_candidate(
    runtime: str,
    directory: Path,
    reference: Predictor,
    films,
    expected: np.ndarray | None,
    calibration: np.ndarray | None,
    export: dict | None,
    speed_input: np.ndarray,
    repeats: int,
    tolerance: float,
) -> dict:
    """One runtime's entry of the record: built (the int8 model calibrated first), checked against the
    reference's probabilities when there are check films, timed, and judged eligible or not, with the reason."""
    entry: dict = {"low_precision": runtime in LOW_PRECISION}
    why_not = _unavailable(runtime, export, calibration)
    if why_not:
        entry.update(available=False, eligible=False, reason=why_not)
        logger.info(f"{runtime}: not measured: {why_not}")
        return entry
    try:
        if runtime == "onnx-int8" and calibration is not None:  # _unavailable refused it without calibration
            where = {"dataset": films.dataset, "fold": films.fold} if films is not None else {}
            quantize_int8(directory, calibration, calibrated_on=where)
        predictor = reference if runtime == REFERENCE else Predictor(directory, runtime=runtime)
    except Exception as error:  # noqa: BLE001  (a candidate that cannot be built is reported, not fatal)
        entry.update(available=False, eligible=False, reason=f"{type(error).__name__}: {' '.join(str(error).split())}")
        logger.info(f"{runtime}: could not be built: {entry['reason']}")
        return entry
    entry["available"] = True
    if _onnx_file(runtime):
        entry.update(file=_onnx_file(runtime), sha256=_recorded_sha256(directory, runtime))
    if films is not None and expected is not None:
        got = expected if runtime == REFERENCE else _probabilities(predictor.run, films.images)
        entry["check"] = accuracy_check(expected, got, films.labels, tolerance)
    entry.update(measure_speed(predictor.run, speed_input, repeats))
    entry["eligible"], entry["reason"] = _eligibility(runtime, entry, export)
    logger.info(_line(runtime, entry))
    return entry


def _check_record(films, expected: np.ndarray, tolerance: float) -> dict:
    """The record's ``check``: which films, the reference's accuracy on them, the tolerance."""
    return {
        "dataset": films.dataset,
        "fold": films.fold,
        "films": int(len(films.labels)),
        "calibration_films": int(len(films.calibration)),
        "reference": REFERENCE,
        "reference_accuracy": 100 * float(np.mean(expected.argmax(1) == films.labels)),
        "tolerance_points": tolerance,
    }


def _unavailable(runtime: str, export: dict | None, calibration: np.ndarray | None) -> str | None:
    if runtime == "torch-bf16" and not native_bf16():
        return "this CPU has no native bf16 (AVX512-BF16 or AMX): emulated bf16 is about 20x slower than float32"
    if _onnx_file(runtime) and export is not None and "error" in export:
        return export["error"]
    if runtime == "onnx-int8" and (calibration is None or not len(calibration)):
        return "the int8 model is calibrated on training films: give --dataset and --fold"
    return None


def _eligibility(runtime: str, entry: dict, export: dict | None) -> tuple[bool, str]:
    check = entry.get("check")
    if runtime == REFERENCE:
        return True, "the reference (float32 PyTorch)"
    if check is not None and not check["passed"]:
        return False, (
            f"failed its accuracy check: accuracy {check['change_points']:+.2f} points "
            f"(tolerance {check['tolerance_points']}), largest probability difference "
            f"{check['max_probability_difference']:.2e}"
        )
    if runtime == "onnx" and export is not None and export.get("parity_random_inputs", 1.0) > ONNX_PARITY:
        return False, f"the export differs from PyTorch by {export['parity_random_inputs']:.2e} (> {ONNX_PARITY})"
    if check is None and runtime in LOW_PRECISION:
        return False, "low precision and not checked (no --dataset and --fold)"
    if check is None:
        return True, f"float32: the export's parity with PyTorch < {ONNX_PARITY} on random inputs (no dataset check)"
    return True, "passed its accuracy check"


def _line(runtime: str, entry: dict) -> str:
    """One row of :func:`format_record`'s table."""
    if not entry.get("available"):
        return f"{runtime:<11} {'-':>10} {'-':>14}   not measured: {entry.get('reason')}"
    text = f"{runtime:<11} {entry['latency_ms']:7.1f} ms {entry['images_per_s']:8.1f} img/s"
    check = entry.get("check")
    if check is not None:
        text += (
            f"   accuracy {check['accuracy']:6.2f} % ({check['change_points']:+.2f})"
            f"   max |dp| {check['max_probability_difference']:.2e}"
            f"   {check['changed_predictions']:>3} changed"
        )
    return text + f"   {'eligible' if entry['eligible'] else 'NOT eligible'}: {entry['reason']}"


def format_record(record: dict) -> str:
    """The record as the terminal shows it: one row per runtime, the check, the choice."""
    check = record.get("check")
    lines = [
        f"{'runtime':<11} {'1 film':>10} {'batch 32':>14}"
        + ("   accuracy on the check films (change), largest probability difference" if check else "")
    ]
    lines += [_line(runtime, entry) for runtime, entry in record["candidates"].items()]
    if check:
        lines.append(
            f"check: {check['films']} validation films of fold {check['fold']} ({check['dataset']}), "
            f"float32 PyTorch {check['reference_accuracy']:.2f} %, tolerance {check['tolerance_points']} points"
        )
    else:
        lines.append("no accuracy check (no --dataset and --fold): only float32 runtimes are eligible")
    lines.append(f"chosen: {record['chosen']} (ranking: {', '.join(record['ranking'])})")
    return "\n".join(lines)
