"""Prediction speed on the CPU, runtime by runtime. Prints figures; asserts nothing.

    python benchmarks/inference.py                       # an untrained CoroNet (legacy_xception, 150 px)
    python benchmarks/inference.py --model runs/quick/4class/fold-1/model --dataset runs/quick/dataset --fold 1

The runtimes (:data:`coronet.deploy.predict.RUNTIMES`): ``torch`` (float32, channels_last), ``torch-bf16``
(only on a CPU with native bf16), ``onnx`` (ONNX Runtime, float32 export) and ``onnx-int8`` (static int8). They
are measured by :func:`coronet.deploy.runtimes.measure_runtimes`, the code behind ``coronet runtimes``, on a
temporary copy of the model directory (nothing is written beside the original):

* latency of one film: the model call alone (input already preprocessed), median of ``--repeats``;
* images/s at batch 32: the model call alone, best of ``max(3, --repeats / 2)`` batches;
* with ``--dataset`` and ``--fold``: the accuracy check of each runtime on the fold's validation films (change of
  the 4-class accuracy against float32 PyTorch, answers changed, largest probability difference) and the int8
  calibration on its training films. Without them the int8 model is calibrated on the real films below,
  unchecked (its figures are speed only: an untrained model's accuracy means nothing);
* end to end: ``Predictor.predict_files`` on ``--files`` real films (decode + resize + model, batch 32), images/s,
  when the shared data is there, and the largest |p - p_torch| on those films.

Weights do not change the speed, so an untrained model is fine for timing.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from coronet.data.imageio import read_image
from coronet.deploy.predict import RUNTIMES, Predictor, find_images, model_input
from coronet.deploy.runtimes import format_record, measure_runtimes
from coronet.models.coronet import build_model
from coronet.models.modeldir import save_model_dir


def benchmark_model_dir(out: Path, source: Path | None = None) -> Path:
    """A copy of the model directory ``source`` at ``out`` (exports go there, not beside the original), or,
    without one, an untrained CoroNet: weights do not change the amount of computation."""
    if source is not None:
        shutil.copytree(source, out)  # with its runtimes.json and int8 model, if any (serve_load.py may use them)
        return out
    torch.manual_seed(0)
    model = build_model(4, "legacy_xception", input_size=150)
    return save_model_dir(
        model,
        out,
        classes=("covid", "normal", "bacterial", "viral"),
        backbone="legacy_xception",
        input_size=150,
        hidden=256,
        dropout=0.5,
        extra={"name": "coronet-untrained-benchmark"},
    )


def films(data: Path, count: int) -> list[Path]:
    folders = [data / "cohen-covid" / "images", data / "kaggle-pneumonia" / "chest_xray" / "train"]
    found = [p for folder in folders if folder.is_dir() for p in find_images([folder])]
    return found[:: max(1, len(found) // count)][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: an untrained 150 px CoroNet)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CORONET_DATA", "../shared/data")))
    parser.add_argument("--dataset", type=Path, help="prepared dataset for the accuracy check and int8 calibration")
    parser.add_argument("--fold", type=int, help="the fold of --dataset whose validation films are checked")
    parser.add_argument("--files", type=int, default=128, help="real films for the end-to-end figure")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated (default: all)")
    args = parser.parse_args()
    if (args.dataset is None) != (args.fold is None):
        parser.error("--dataset and --fold go together")
    chosen = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    # measure_runtimes' log lines, indented under the model's line
    logging.basicConfig(format="  %(message)s", stream=sys.stdout)
    logging.getLogger("coronet").setLevel(logging.INFO)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = benchmark_model_dir(Path(tmp) / "model", args.model)
        reference = Predictor(model_dir)
        size, card = reference.input_size, reference.card
        paths = films(args.data, args.files)
        calibration = None
        if args.dataset is None and paths:
            calibration = model_input([read_image(p) for p in paths[:100]], size)
        print(f"model: {card['name']} ({card['backbone']}, {size} px), weights {card['weights_sha256'][:12]}")
        start = time.perf_counter()
        record = measure_runtimes(
            model_dir,
            args.dataset,
            args.fold,
            repeats=args.repeats,
            calibration=calibration,
            runtimes=chosen,
            write=False,
        )
        machine = record["machine"]
        print(
            f"machine: {machine['cpu']}, {machine['cpus']} CPUs (AVX2 {machine['avx2']}, AVX512-VNNI "
            f"{machine['avx512_vnni']}, native bf16 {machine['native_bf16']}), torch {machine['torch']} "
            f"({machine['torch_threads']} threads), ONNX Runtime {machine['onnxruntime']}; "
            f"measuring took {time.perf_counter() - start:.0f} s"
        )
        print(format_record(record))
        if args.dataset is None and "onnx-int8" in chosen:
            print(f"(onnx-int8 calibrated on {0 if calibration is None else len(calibration)} real films, unchecked)")

        if not paths:
            print(f"no real films under {args.data}: no end-to-end figures")
            return
        results = {}
        for runtime, entry in record["candidates"].items():
            if not entry.get("available"):
                continue
            predictor = reference if runtime == "torch" else Predictor(model_dir, runtime=runtime)
            list(predictor.predict_files(paths[:32], batch_size=32))  # warm-up
            start = time.perf_counter()
            rows = list(predictor.predict_files(paths, batch_size=32))
            rate = len(paths) / (time.perf_counter() - start)
            results[runtime] = np.array([r.probabilities for r in rows])
            line = f"{runtime:>10}: end to end ({len(paths)} films, decode + model, batch 32): {rate:6.1f} images/s"
            if "torch" in results and runtime != "torch":
                line += f"   max |p - p_torch| {np.abs(results[runtime] - results['torch']).max():.2e}"
            print(line)


if __name__ == "__main__":
    main()
