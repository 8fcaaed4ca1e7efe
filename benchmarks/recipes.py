"""The recipe search behind docs/RECIPES.md: one lever at a time on one fold, each run scored four ways.

    python benchmarks/recipes.py --dataset runs/dataset --out runs/recipes --experiments base,lr2e-3
    python benchmarks/recipes.py --list                      # the experiments and their settings
    python benchmarks/recipes.py --table runs/recipes        # the Markdown rows of every finished run

Each experiment is the reference recipe (``REFERENCE``, over the ``fast`` profile's remaining
settings) with one lever changed (``EXPERIMENTS``), trained with the project's own code
(``coronet.training.fit.fit_fold``) on every fold but ``--fold`` and validated on it. EMA and
flip-TTA change nothing in training, so every run keeps a weight average and its final checkpoint
is scored four ways -- raw / EMA weights, without / with TTA -- and one training run answers both
levers. A finished run is skipped (resumable:
an interrupted one continues from its checkpoint).

Each row: accuracy and COVID-19 / normal / bacterial / viral recall, epochs, minutes of training
(wall clock, validation included), the CPU, and the 1-minute load average at the end (a load well
above the core count means the minutes were slowed by other work; the accuracy is unaffected:
training is deterministic).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from coronet.data.prepare import load_cache
from coronet.training.fit import CoroNetModule, fit_fold, resolve_precision
from coronet.training.profiles import get_profile

#: The reference every lever changes one thing of: the recipe the issue measured outside the project
#: (0.79 on fold 1), on the Table II model at 150 px. Spelled out, so a change to a profile cannot move it.
REFERENCE = dict(
    epochs=8,
    batch_size=16,
    optimizer="adamw",
    lr=1e-3,
    weight_decay=0.05,
    schedule="onecycle",
    warmup=0.25,
    label_smoothing=0.1,
    rotation=10.0,
    shift=0.06,
    shear=0.0,
    zoom=0.1,
    hflip=True,
    vflip=False,
    brightness=0.0,
    contrast=0.0,
    mixup=0.0,
    cutmix=0.0,
    train_sizes=(),
    tta=False,
    bn_zero_init=False,
    bn_momentum=0.1,
    augment=True,
)

#: name -> (what it changes, settings over REFERENCE). ``base`` is the reference itself.
EXPERIMENTS: dict[str, tuple[str, dict]] = {
    "smoke": ("pipeline smoke test: 1 epoch on 8 images per class", {"epochs": 1, "train_per_class": 8}),
    "base": (
        "the issue's reference recipe (AdamW 0.05, one-cycle 1e-3, 25 % warm-up, smoothing 0.1, batch 16, "
        "light augmentation, 8 epochs)",
        {},
    ),
    "epochs10": ("10 epochs", {"epochs": 10}),
    "lr2e-3": ("peak lr 2e-3", {"lr": 2e-3}),
    "lr5e-4": ("peak lr 5e-4", {"lr": 5e-4}),
    "cosine": ("cosine schedule, 10 % warm-up", {"schedule": "cosine", "warmup": 0.1}),
    "warmup10": ("one-cycle with 10 % warm-up", {"warmup": 0.1}),
    "batch32": ("batch 32", {"batch_size": 32}),
    "batch8": ("batch 8", {"batch_size": 8}),
    "wd0.01": ("weight decay 0.01", {"weight_decay": 0.01}),
    "wd0.2": ("weight decay 0.2", {"weight_decay": 0.2}),
    "nosmooth": ("no label smoothing", {"label_smoothing": 0.0}),
    "paperaug": (
        "the paper's augmentation (rotation 50, shift 0.2, shear 0.25, zoom 0.1, both flips, brightness)",
        {"rotation": 50.0, "shift": 0.2, "shear": 0.25, "zoom": 0.1, "vflip": True, "brightness": 0.15},
    ),
    "vflip": ("+ vertical flips", {"vflip": True}),
    "rot50": ("rotation 50 deg", {"rotation": 50.0}),
    "noaug": ("no augmentation", {"augment": False}),
    "strongeraug": (
        "rotation 15, shift 0.1, zoom 0.15, brightness/contrast 0.2",
        {"rotation": 15.0, "shift": 0.1, "zoom": 0.15, "brightness": 0.2, "contrast": 0.2},
    ),
    "mixup": ("mixup 0.2", {"mixup": 0.2}),
    "cutmix": ("cutmix 1.0", {"cutmix": 1.0}),
    "bnzero": ("zero-init last BatchNorm of each residual branch", {"bn_zero_init": True}),
    "bnmom": ("BatchNorm momentum 0.01", {"bn_momentum": 0.01}),
    "prog": ("progressive resizing: epochs 1-4 at 112 px, then 150", {"train_sizes": (112, 112, 112, 112)}),
    "prog96": ("progressive resizing: epochs 1-2 at 96, 3-4 at 112 px, then 150", {"train_sizes": (96, 96, 112, 112)}),
}


def score(config, checkpoint: Path, dataset: Path, fold: int) -> dict[str, dict]:
    """Accuracy and per-class recall of the checkpoint's raw and EMA weights, without and with flip-TTA."""
    module = CoroNetModule(replace(config, ema=config.ema or 0.99, compile=False))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    has_ema = any(k.startswith("ema.") for k in state)
    module.load_state_dict(state, strict=has_ema)
    module.eval()
    manifest = pd.read_csv(dataset / "manifest.csv")
    rows = manifest[manifest.fold == fold]
    cache = load_cache(dataset, config.input_size)
    labels = rows.label.map({c: k for k, c in enumerate(config.classes)}).to_numpy()
    nets = {"raw": module.model, **({"ema": module.ema.module} if has_ema else {})}
    results = {}
    with torch.inference_mode():
        for name, net in nets.items():
            plain, flipped = [], []
            for start in range(0, len(rows), 64):
                images = torch.from_numpy(np.asarray(cache[rows.cache_index.to_numpy()[start : start + 64]]))
                images = images[:, None].float().div(255).contiguous(memory_format=torch.channels_last)
                plain.append(torch.softmax(net(images), 1))
                flipped.append(torch.softmax(net(images.flip(-1)), 1))
            plain, flipped = torch.cat(plain), torch.cat(flipped)
            for tta, probabilities in (("", plain), ("+tta", (plain + flipped) / 2)):
                predicted = probabilities.argmax(1).numpy()
                results[name + tta] = {
                    "accuracy": float((predicted == labels).mean()),
                    **{
                        f"recall_{c}": float((predicted[labels == k] == k).mean()) for k, c in enumerate(config.classes)
                    },
                }
    return results


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                flags = open("/proc/cpuinfo").read()
                return name + (" (AVX512-BF16)" if "avx512_bf16" in flags else " (AVX2, no bf16)")
    except OSError:
        pass
    return platform.processor() or "cpu"


def run(dataset: Path, out: Path, names: list[str], profile: str, fold: int, log=print) -> None:
    for name in names:
        if name not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {name!r}; --list shows them")
        run_dir = out / name
        if (run_dir / "result.json").is_file():
            log(f"{name}: done, skipped")
            continue
        description, settings = EXPERIMENTS[name]
        config = get_profile(profile).with_overrides(**{**REFERENCE, **settings})
        config = replace(config, ema=config.ema or 0.99)  # scored with and without the average
        log(f"{name}: {description}")
        started = time.perf_counter()
        fit_fold(dataset, fold, run_dir, config, resume=True, progress=False)
        minutes = (time.perf_counter() - started) / 60
        seconds = pd.read_csv(run_dir / "metrics.csv")["seconds"]
        variants = score(config, run_dir / "checkpoints" / "last.ckpt", dataset, fold)
        result = {
            "name": name,
            "lever": description,
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in settings.items()},
            "profile": profile,
            "fold": fold,
            "epochs": config.epochs,
            "minutes": round(minutes, 1),
            "train_minutes": round(float(seconds.sum()) / 60, 1),
            "precision": resolve_precision(config),
            "cpu": cpu_name(),
            "load_1min": round(os.getloadavg()[0], 2),
            "val_acc_by_epoch": pd.read_csv(run_dir / "metrics.csv")["val_acc"].round(4).tolist(),
            "variants": variants,
        }
        (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        (run_dir / "checkpoints" / "last.ckpt").unlink()
        best = variants.get("ema+tta", variants["raw+tta"])
        log(f"{name}: accuracy {best['accuracy']:.3f} (EMA+TTA), {minutes:.1f} min")


def table(out: Path) -> str:
    lines = [
        "| experiment | lever | fold-1 acc (raw) | EMA | EMA + flip-TTA | COVID / normal / bact. / viral recall "
        "(EMA + TTA) | epochs | minutes | CPU (load) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for path in sorted(out.glob("*/result.json"), key=lambda p: p.stat().st_mtime):
        r = json.loads(path.read_text())
        v = r["variants"]
        best = v.get("ema+tta", v["raw+tta"])
        recalls = " / ".join(f"{best[f'recall_{c}']:.2f}" for c in ("covid", "normal", "bacterial", "viral"))
        lines.append(
            f"| {r['name']} | {r['lever']} | {v['raw']['accuracy']:.3f} "
            f"| {v.get('ema', {}).get('accuracy', float('nan')):.3f} "
            f"| {best['accuracy']:.3f} | {recalls} | {r['epochs']} | {r['minutes']} | {r['cpu']} "
            f"({r['load_1min']}) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("runs/dataset"))
    parser.add_argument("--out", type=Path, default=Path("runs/recipes"))
    parser.add_argument("--experiments", default="base")
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table", type=Path)
    args = parser.parse_args()
    if args.list:
        for name, (description, settings) in EXPERIMENTS.items():
            print(f"{name:12s} {description}  {settings}")
    elif args.table:
        print(table(args.table))
    else:
        # coronet's log lines (fit_fold's, ...) on stdout, as the command line prints them
        logging.basicConfig(format="%(message)s", stream=sys.stdout)
        logging.getLogger("coronet").setLevel(logging.INFO)
        run(args.dataset, args.out, args.experiments.split(","), args.profile, args.fold)


if __name__ == "__main__":
    main()
