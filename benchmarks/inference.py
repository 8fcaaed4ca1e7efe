"""Prediction speed on the CPU: PyTorch vs ONNX Runtime. Prints figures; asserts nothing.

    python benchmarks/inference.py                       # an untrained CoroNet (legacy_xception, 150 px)
    python benchmarks/inference.py --model runs/quick/4class/fold-1/model --data ../shared/data

For each runtime, on the same model and the same input:

* latency of one image: the model call alone (input already preprocessed), median of ``--repeats``;
* images/s at batch 32: the model call alone, best of ``--repeats`` batches;
* end to end: ``Predictor.predict_files`` on ``--files`` real films (decode + resize + model,
  batch 32), images/s, when the shared data is there;
* parity: largest |p_onnx - p_torch| on those films.

Weights do not change the speed, so an untrained model is fine for timing; the ONNX file is
exported into a temporary copy of the model directory.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from coronet.deploy.export import export_onnx
from coronet.deploy.predict import Predictor, find_images
from coronet.models.coronet import build_model
from coronet.models.modeldir import save_model_dir


def benchmark_model_dir(out: Path, source: Path | None = None) -> Path:
    """A copy of the model directory ``source`` at ``out`` (exports go there, not beside the original), or,
    without one, an untrained CoroNet: weights do not change the amount of computation."""
    if source is not None:
        shutil.copytree(source, out)
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


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def films(data: Path, count: int) -> list[Path]:
    folders = [data / "cohen-covid" / "images", data / "kaggle-pneumonia" / "chest_xray" / "train"]
    found = [p for folder in folders if folder.is_dir() for p in find_images([folder])]
    return found[:: max(1, len(found) // count)][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="model directory (default: an untrained 150 px CoroNet)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("CORONET_DATA", "../shared/data")))
    parser.add_argument("--files", type=int, default=128, help="real films for the end-to-end figure")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = benchmark_model_dir(Path(tmp) / "model", args.model)
        start = time.perf_counter()
        export_onnx(model_dir)
        export_s = time.perf_counter() - start
        predictors = {runtime: Predictor(model_dir, runtime=runtime) for runtime in ("torch", "onnx")}
        size = predictors["torch"].input_size
        card = predictors["torch"].card
        print(f"model: {card['name']} ({card['backbone']}, {size} px), weights {card['weights_sha256'][:12]}")
        print(
            f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads), ONNX export {export_s:.1f} s"
        )

        rng = np.random.default_rng(0)
        one = rng.random((1, 1, size, size), dtype=np.float32)
        batch = rng.random((32, 1, size, size), dtype=np.float32)
        paths = films(args.data, args.files)
        results = {}
        for runtime, predictor in predictors.items():
            run = predictor.run
            timed(lambda: run(batch), 2)  # noqa: B023  (warm-up: allocations, ORT's first run)
            latency = statistics.median(timed(lambda: run(one), args.repeats))  # noqa: B023
            throughput = 32 / min(timed(lambda: run(batch), max(3, args.repeats // 2)))  # noqa: B023
            line = f"{runtime:>5}: latency (1 image) {latency * 1000:7.1f} ms   batch 32: {throughput:6.1f} images/s"
            if paths:
                start = time.perf_counter()
                rows = list(predictor.predict_files(paths, batch_size=32))
                end_to_end = len(paths) / (time.perf_counter() - start)
                results[runtime] = np.array([r.probabilities for r in rows])
                line += f"   end to end ({len(paths)} films, decode + model): {end_to_end:6.1f} images/s"
            print(line)
        if len(results) == 2:
            print(
                f"parity on {len(paths)} real films: max |p_onnx - p_torch| = "
                f"{np.abs(results['onnx'] - results['torch']).max():.2e}"
            )


if __name__ == "__main__":
    main()
