"""Training and inference throughput of CoroNet on this machine. Prints figures; asserts nothing.

    python benchmarks/throughput.py                 # CPU or the first GPU
    python benchmarks/throughput.py --steps 20 --batch-sizes 10,32 --precisions 32,bf16-mixed
    python benchmarks/throughput.py --loop-only --precisions 32      # the real loop vs the bare step

The real loop: ``coronet.training.fit.fit_fold`` with the ``fast`` profile (Lightning, the
sampler, batched augmentation on the device, the weight average, the schedule) for two
epochs of ``--loop-images`` synthetic films; its second epoch's images/s against the bare
step's at the same batch size and precision (target: within 10 %).

Training: one optimisation step (forward, cross-entropy, backward, fused Adam) of the
150x150 4-class model on random data, in each layout/precision variant; images/s over
``--steps`` timed steps after warm-up. Inference: eval mode, latency of one image
(median) and images/s at batch 32. Peak memory: CUDA's allocator peak on a GPU, the
process' maximum resident set size on the CPU.

The real training loop (Lightning, augmentation, data loading) records its own
images/s per epoch in each fold's ``metrics.csv``.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from coronet.models.coronet import build_model


def cpu_has_bf16() -> bool:
    from coronet.training.fit import cpu_has_native_bf16

    return cpu_has_native_bf16()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_speed(device, batch_size, precision, channels_last, compile_model, steps, warmup) -> float:
    torch.manual_seed(0)
    model = build_model().to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    forward = torch.compile(model) if compile_model else model
    images = torch.rand(batch_size, 1, 150, 150, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 4, (batch_size,), device=device)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")

    def step():
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = F.cross_entropy(forward(images), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    for _ in range(warmup):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps * batch_size / (time.perf_counter() - started)


def loop_speed(device, batch_size, precision, images: int) -> float:
    """images/s of the real training loop (second epoch) on a synthetic prepared dataset."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import pandas as pd

    from coronet.training.fit import fit_fold
    from coronet.training.profiles import get_profile

    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "dataset"
        dataset.mkdir()
        rng = np.random.default_rng(0)
        total = images + 16  # fold 2 validates: a few films, so validation costs little
        np.save(dataset / "images-150.npy", rng.integers(0, 256, (total, 150, 150), dtype=np.uint8))
        labels = np.array(["covid", "normal", "bacterial", "viral"])[np.arange(total) % 4]
        pd.DataFrame(
            {
                "path": [f"{k}.png" for k in range(total)],
                "label": labels,
                "patient_id": [f"p{k}" for k in range(total)],
                "fold": [1] * images + [2] * 16,
                "cache_index": np.arange(total),
            }
        ).to_csv(dataset / "manifest.csv", index=False)
        config = get_profile("fast").with_overrides(
            epochs=2, batch_size=batch_size, precision=precision, accelerator="gpu" if device.type == "cuda" else "cpu"
        )
        fit_fold(dataset, 2, Path(tmp) / "run", config, progress=False)
        return float(pd.read_csv(Path(tmp) / "run" / "metrics.csv")["train_images_per_s"].iloc[-1])


def inference_speed(device, channels_last, repeats) -> tuple[float, float]:
    model = build_model().to(device).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    one = torch.rand(1, 1, 150, 150, device=device)
    batch = torch.rand(32, 1, 150, 150, device=device)
    latencies = []
    with torch.inference_mode():
        for _ in range(3):
            model(one)
        for _ in range(repeats):
            synchronize(device)
            started = time.perf_counter()
            model(one)
            synchronize(device)
            latencies.append(time.perf_counter() - started)
        model(batch)
        synchronize(device)
        started = time.perf_counter()
        for _ in range(max(2, repeats // 10)):
            model(batch)
        synchronize(device)
        rate = max(2, repeats // 10) * 32 / (time.perf_counter() - started)
    return statistics.median(latencies) * 1000, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", default="10,32")
    parser.add_argument("--precisions", default=None, help="default: 32 and bf16-mixed where the hardware has bf16")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--repeats", type=int, default=30, help="inference latency samples")
    parser.add_argument("--loop-images", type=int, default=160, help="training films per epoch of the loop check")
    parser.add_argument("--loop-only", action="store_true", help="only the real loop vs the bare step")
    parser.add_argument("--no-loop", action="store_true", help="skip the real-loop check")
    args = parser.parse_args()

    device = torch.device(args.device)
    has_bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_bf16()
    precisions = args.precisions.split(",") if args.precisions else ["32"] + (["bf16-mixed"] if has_bf16 else [])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"# CoroNet throughput on {device.type} ({name}), torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    if not has_bf16 and not args.precisions:
        print("# bf16-mixed skipped: no bf16 instructions on this device (pass --precisions 32,bf16-mixed to force)")
    if not args.no_loop:
        print(
            "| real loop vs bare step (channels_last) | precision | batch | bare images/s | loop images/s | "
            "loop / bare |"
        )
        print("|---|---|---|---|---|---|")
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            for precision in precisions:
                bare = train_speed(device, batch_size, precision, True, False, args.steps, args.warmup)
                loop = loop_speed(device, batch_size, precision, args.loop_images)
                print(
                    f"| fast profile | {precision} | {batch_size} | {bare:.1f} | {loop:.1f} | {loop / bare:.2f} |",
                    flush=True,
                )
        print()
    if args.loop_only:
        return
    print("| training variant | precision | batch | images/s |")
    print("|---|---|---|---|")
    variants = [("eager", False, False), ("channels_last", True, False)]
    if args.compile:
        variants.append(("channels_last + compile", True, True))
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        for precision in precisions:
            for label, channels_last, compile_model in variants:
                rate = train_speed(device, batch_size, precision, channels_last, compile_model, args.steps, args.warmup)
                print(f"| {label} | {precision} | {batch_size} | {rate:.1f} |", flush=True)
    print()
    print("| inference variant | latency, 1 image (ms) | images/s at batch 32 |")
    print("|---|---|---|")
    for label, channels_last in (("eager", False), ("channels_last", True)):
        latency, rate = inference_speed(device, channels_last, args.repeats)
        print(f"| {label} fp32 | {latency:.1f} | {rate:.1f} |", flush=True)
    print(f"\npeak memory: {peak_memory_mib(device):.0f} MiB")


if __name__ == "__main__":
    main()
