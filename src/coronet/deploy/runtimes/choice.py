"""The choice: every runtime built, checked against float32 PyTorch, timed, judged eligible or not, and ranked.

A low-precision runtime (:data:`LOW_PRECISION`) is eligible only when its check passed (:func:`accuracy_check`),
so without a dataset only the float32 runtimes are (``onnx`` on the strength of the export's parity check,
< :data:`ONNX_PARITY` on random inputs). The fastest eligible runtime (lowest latency for one film, then the most
images/s) is the choice, and :func:`measure_runtimes` records it in ``runtimes.json``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from ...models.modeldir import ModelLoadError, read_card
from ..export import ONNX_NAME, export_onnx, onnx_parity, open_session
from .cpu import machine, native_bf16
from .int8 import quantize_int8
from .measure import THROUGHPUT_BATCH, CheckFilms, fold_films, measure_speed, probabilities
from .record import FORMAT, recorded_sha256, write_record
from .runners import REFERENCE, RUNTIMES, Runner, load_for_inference, load_runner, onnx_file

logger = logging.getLogger(__name__)

#: The largest change of the 4-class accuracy (percentage points) a low-precision runtime may make.
TOLERANCE_POINTS = 0.5
#: The largest share of the check films (percent) whose predicted class a low-precision runtime may change. The
#: accuracy alone misses answers changed both ways (a right answer lost, a wrong one righted): they cancel in it.
MAX_CHANGED_PERCENT = 1.0
#: The runtimes whose answers may differ from float32 PyTorch's beyond rounding: each needs a passed check.
LOW_PRECISION = ("torch-bf16", "onnx-int8")
#: The export's parity with PyTorch (random inputs) that makes ``onnx`` eligible without a dataset.
ONNX_PARITY = 1e-4
RULE = (
    "the lowest latency for one film (then the most images/s at batch 32) among the runtimes that passed their "
    "accuracy check (4-class accuracy within {tolerance} points of float32 PyTorch, and at most {max_changed} % of "
    "the answers changed, on the fold's validation films); without a check, float32 runtimes only"
)


def accuracy_check(
    reference: np.ndarray,
    candidate: np.ndarray,
    labels: np.ndarray,
    tolerance: float = TOLERANCE_POINTS,
    max_changed: float = MAX_CHANGED_PERCENT,
) -> dict:
    """Does ``candidate`` (probabilities, ``(N, classes)``) answer as ``reference`` does on films labelled ``labels``?

    It passes when its accuracy differs from the reference's by at most ``tolerance`` percentage points, at
    most ``max_changed`` percent of the films change their predicted class, and every probability is finite.
    Also reported: how many films changed their predicted class, and the largest absolute probability difference.
    """
    reference, candidate = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    labels = np.asarray(labels)
    if candidate.shape != reference.shape or reference.shape[0] != labels.shape[0] or not len(labels):
        raise ValueError(f"shapes differ: reference {reference.shape}, candidate {candidate.shape}, {labels.shape}")
    films = len(labels)
    right_reference = int((reference.argmax(1) == labels).sum())
    right = int((candidate.argmax(1) == labels).sum())
    finite = bool(np.isfinite(candidate).all())
    changed = int((candidate.argmax(1) != reference.argmax(1)).sum())
    # in whole films, so that 1 film in 200 (exactly 0.5 points) is not lost to rounding
    within = abs(right - right_reference) * 100 <= tolerance * films + 1e-9
    few_changed = changed * 100 <= max_changed * films + 1e-9
    return {
        "films": films,
        "reference_accuracy": 100 * right_reference / films,
        "accuracy": 100 * right / films,
        "change_points": 100 * (right - right_reference) / films,
        "changed_predictions": changed,
        "changed_percent": 100 * changed / films,
        "max_probability_difference": float(np.abs(candidate - reference).max()) if finite else float("inf"),
        "tolerance_points": tolerance,
        "max_changed_percent": max_changed,
        "passed": finite and within and few_changed,
    }


@dataclass(frozen=True)
class _Bench:
    """What every candidate runtime is measured against and with."""

    directory: Path
    reference: Runner  # float32 PyTorch
    model: torch.nn.Module  # the float32 model, its card and the network that predicts (load_for_inference)
    card: dict
    network: torch.nn.Module
    films: CheckFilms | None  # the check films (None: no check)
    expected: np.ndarray | None  # the reference's probabilities on them
    calibration: np.ndarray | None  # the int8 model's calibration films
    export: dict | None  # the ONNX export's parity, or why there is none
    speed_input: np.ndarray  # the films timed
    repeats: int
    tolerance: float
    max_changed: float


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
    max_changed: float = MAX_CHANGED_PERCENT,
    write: bool = True,
) -> dict:
    """Measure (and with ``dataset`` and ``fold``, check) each runtime of ``runtimes`` on this machine, choose,
    and write ``MODEL_DIR/runtimes.json`` (unless ``write`` is false); return the record.

    Without a dataset the int8 model can still be built from ``calibration`` (ready model input; the
    benchmark's real films), but with no check it is not eligible, like ``torch-bf16``. ``tolerance``: the
    accuracy change allowed, in points (default :data:`TOLERANCE_POINTS`); ``max_changed``: the share of the
    check films whose answer may change, in percent (default :data:`MAX_CHANGED_PERCENT`); the command line
    keeps both. ``repeats``: timed runs per figure (:func:`measure_speed`).
    """
    directory = read_card(model_dir)[1]
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime(s) {', '.join(unknown)}; choose from {', '.join(RUNTIMES)}")
    if (dataset is None) != (fold is None):
        raise ValueError("the accuracy check needs both a dataset and a fold")
    bench = _bench(directory, dataset, fold, calibration_films, calibration, runtimes, repeats, tolerance, max_changed)
    candidates = {runtime: _measure_candidate(runtime, bench) for runtime in runtimes}
    ranking = sorted(
        (r for r, e in candidates.items() if e.get("eligible")),
        key=lambda r: (candidates[r]["latency_ms"], -candidates[r]["images_per_s"]),
    )
    if REFERENCE not in ranking:  # torch not among the runtimes asked for: it is still the fallback
        ranking.append(REFERENCE)
    record = {
        "format": FORMAT,
        "model": bench.card.get("name"),
        "weights_sha256": bench.card["weights_sha256"],
        "machine": machine(),
        "check": _check_record(bench),
        "onnx_export": bench.export,
        "candidates": candidates,
        "rule": RULE.format(tolerance=tolerance, max_changed=max_changed),
        "ranking": ranking,
        "chosen": ranking[0],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if write:
        write_record(directory, record)
    return record


def _bench(
    directory: Path,
    dataset: str | os.PathLike | None,
    fold: int | None,
    calibration_films: int,
    calibration: np.ndarray | None,
    runtimes: Sequence[str],
    repeats: int,
    tolerance: float,
    max_changed: float,
) -> _Bench:
    """The reference loaded, the check films read (with a dataset) and answered by it, the export made if needed."""
    model, card, network = load_for_inference(directory)
    reference = load_runner(REFERENCE, directory, model, card, network)
    size = int(card["input_size"])
    films = None
    if dataset is not None and fold is not None:
        films = fold_films(dataset, fold, card["classes"], size, calibration_films=calibration_films)
        calibration = films.calibration
        logger.info(
            f"check: fold {fold} of {dataset}: {len(films.labels)} validation films; int8 calibrated on "
            f"{len(calibration)} of its training films"
        )
        speed_input = films.images[:THROUGHPUT_BATCH]
    else:
        speed_input = np.random.default_rng(0).random((THROUGHPUT_BATCH, 1, size, size), dtype=np.float32)
    expected = probabilities(reference.run, films.images) if films is not None else None
    export: dict | None = None
    if any(onnx_file(r) for r in runtimes):
        try:
            export = _ensure_export(directory, model)
        except ImportError as error:
            export = {"error": f"ONNX Runtime is not installed ({error}): pip install 'coronet[onnx]'"}
    return _Bench(
        directory=directory,
        reference=reference,
        model=model,
        card=card,
        network=network,
        films=films,
        expected=expected,
        calibration=calibration,
        export=export,
        speed_input=speed_input,
        repeats=repeats,
        tolerance=tolerance,
        max_changed=max_changed,
    )


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


def _measure_candidate(runtime: str, bench: _Bench) -> dict:
    """One runtime's entry of the record: built (the int8 model calibrated first), checked against the
    reference's probabilities when there are check films, timed, and judged eligible or not, with the reason."""
    entry: dict = {"low_precision": runtime in LOW_PRECISION}
    why_not = _unavailable(runtime, bench.export, bench.calibration)
    if why_not:
        entry.update(available=False, eligible=False, reason=why_not)
        logger.info(f"{runtime}: not measured: {why_not}")
        return entry
    try:
        runner = _build(runtime, bench)
    except Exception as error:  # noqa: BLE001  (a candidate that cannot be built is reported, not fatal)
        entry.update(available=False, eligible=False, reason=f"{type(error).__name__}: {' '.join(str(error).split())}")
        logger.info(f"{runtime}: could not be built: {entry['reason']}")
        return entry
    entry["available"] = True
    if onnx_file(runtime):
        entry.update(file=onnx_file(runtime), sha256=recorded_sha256(bench.directory, runtime))
    if bench.films is not None and bench.expected is not None:
        got = bench.expected if runtime == REFERENCE else probabilities(runner.run, bench.films.images)
        entry["check"] = accuracy_check(bench.expected, got, bench.films.labels, bench.tolerance, bench.max_changed)
    entry.update(measure_speed(runner.run, bench.speed_input, bench.repeats))
    entry["eligible"], entry["reason"] = _eligibility(runtime, entry, bench.export)
    logger.info(_line(runtime, entry))
    return entry


def _build(runtime: str, bench: _Bench) -> Runner:
    """The runtime loaded as ``predict`` loads it; the int8 model quantised first (on the calibration films)."""
    if runtime == "onnx-int8" and bench.calibration is not None:  # _unavailable refused it without calibration
        films = bench.films
        where = {"dataset": films.dataset, "fold": films.fold} if films is not None else {}
        quantize_int8(bench.directory, bench.calibration, calibrated_on=where)
    if runtime == REFERENCE:
        return bench.reference
    return load_runner(runtime, bench.directory, bench.model, bench.card, bench.network)


def _check_record(bench: _Bench) -> dict | None:
    """The record's ``check``: which films, the reference's accuracy on them, the bounds (None: no check)."""
    films, expected = bench.films, bench.expected
    if films is None or expected is None:
        return None
    return {
        "dataset": films.dataset,
        "fold": films.fold,
        "films": int(len(films.labels)),
        "calibration_films": int(len(films.calibration)),
        "reference": REFERENCE,
        "reference_accuracy": 100 * float(np.mean(expected.argmax(1) == films.labels)),
        "tolerance_points": bench.tolerance,
        "max_changed_percent": bench.max_changed,
    }


def _unavailable(runtime: str, export: dict | None, calibration: np.ndarray | None) -> str | None:
    """Why ``runtime`` cannot be measured here (None: it can)."""
    if runtime == "torch-bf16" and not native_bf16():
        return "this CPU has no native bf16 (AVX512-BF16 or AMX): emulated bf16 is about 20x slower than float32"
    if onnx_file(runtime) and export is not None and "error" in export:
        return export["error"]
    if runtime == "onnx-int8" and (calibration is None or not len(calibration)):
        return "the int8 model is calibrated on training films: give --dataset and --fold"
    return None


def _eligibility(runtime: str, entry: dict, export: dict | None) -> tuple[bool, str]:
    """(whether a measured runtime may be chosen, why)."""
    check = entry.get("check")
    if runtime == REFERENCE:
        return True, "the reference (float32 PyTorch)"
    if check is not None and not check["passed"]:
        return False, (
            f"failed its accuracy check: accuracy {check['change_points']:+.2f} points "
            f"(tolerance {check['tolerance_points']}), {check['changed_predictions']} of {check['films']} answers "
            f"changed ({check['changed_percent']:.2f} %, at most {check['max_changed_percent']} %), largest "
            f"probability difference {check['max_probability_difference']:.2e}"
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
            f"   {check['changed_predictions']:>3} changed ({check['changed_percent']:.2f} %)"
        )
    return text + f"   {'eligible' if entry['eligible'] else 'NOT eligible'}: {entry['reason']}"


def format_record(record: dict) -> str:
    """The record as the terminal shows it: one row per runtime, the check, the choice."""
    check = record.get("check")
    lines = [
        f"{'runtime':<11} {'1 film':>10} {'batch 32':>14}"
        + ("   accuracy on the check films (change), largest probability difference, answers changed" if check else "")
    ]
    lines += [_line(runtime, entry) for runtime, entry in record["candidates"].items()]
    if check:
        lines.append(
            f"check: {check['films']} validation films of fold {check['fold']} ({check['dataset']}), "
            f"float32 PyTorch {check['reference_accuracy']:.2f} %, tolerance {check['tolerance_points']} points, "
            f"at most {check['max_changed_percent']} % of the answers changed"
        )
    else:
        lines.append("no accuracy check (no --dataset and --fold): only float32 runtimes are eligible")
    lines.append(f"chosen: {record['chosen']} (ranking: {', '.join(record['ranking'])})")
    return "\n".join(lines)
