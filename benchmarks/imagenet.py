"""The screen behind the ``imagenet`` profile (docs/RECIPES.md, "From ImageNet"): fine-tuning Keras's ImageNet
Xception on one fold, one choice at a time.

    coronet weights fetch                                        # once: Keras's Xception into the cache
    coronet data prepare --data ../shared/data --out runs/dataset
    python benchmarks/imagenet.py --dataset runs/dataset --out runs/imagenet-screen --experiments probe,symmetric
    python benchmarks/imagenet.py --list
    python benchmarks/imagenet.py --table runs/imagenet-screen

Each experiment is ``REFERENCE`` (the issue's probe: the ``fast`` profile from ImageNet at lr 2e-4, 6 epochs)
with some settings changed, trained by ``coronet.training.fit.fit_fold`` on every fold but ``--fold`` and
reported by ``coronet report`` (benchmarks/shortcuts.py's harness: Table I figures and, on a dataset with
extra cohorts, the share of each negative source called COVID-19). A finished run is skipped; an
interrupted one continues from its checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from shortcuts import run, table

#: The issue's probe, spelled out over the fast profile: ImageNet start, lr 2e-4, 6 epochs, pixels / 255.
REFERENCE = {"weights": "imagenet", "lr": 2e-4, "epochs": 6}
SYMMETRIC = {**REFERENCE, "input_scale": "symmetric"}
#: the head at 1e-3, the pretrained backbone at a tenth of it
SPLIT = {**SYMMETRIC, "lr": 1e-3, "backbone_lr": 0.1}

EXPERIMENTS: dict[str, tuple[str, dict]] = {
    "smoke": ("pipeline smoke test: 1 epoch on 8 images per class", {**REFERENCE, "epochs": 1, "train_per_class": 8}),
    "probe": ("fast profile from ImageNet, lr 2e-4, 6 epochs, pixels / 255 (the issue's probe)", REFERENCE),
    "symmetric": ("the probe with Keras's input scaling, [-1, 1]", SYMMETRIC),
    "split-lr": ("[-1, 1]; head lr 1e-3, backbone 1e-4", SPLIT),
    "freeze1": (
        "[-1, 1]; head lr 1e-3, backbone 1e-4, backbone frozen for the first epoch",
        {**SPLIT, "freeze_epochs": 1},
    ),
    "lr5e-4": ("[-1, 1], lr 5e-4 everywhere", {**SYMMETRIC, "lr": 5e-4}),
    "lr1e-4": ("[-1, 1], lr 1e-4 everywhere", {**SYMMETRIC, "lr": 1e-4}),
    "split-10ep": ("[-1, 1]; head lr 1e-3, backbone 1e-4, 10 epochs", {**SPLIT, "epochs": 10}),
    "sym-10ep": ("[-1, 1], lr 2e-4, 10 epochs", {**SYMMETRIC, "epochs": 10}),
    "sym-4ep": ("[-1, 1], lr 2e-4, 4 epochs", {**SYMMETRIC, "epochs": 4}),
    "sym-paper-aug": (
        "[-1, 1], lr 2e-4, the paper's augmentation (rotation 50, shift 0.2, shear, both flips, brightness)",
        {**SYMMETRIC, "rotation": 50.0, "shift": 0.2, "shear": 0.25, "vflip": True, "brightness": 0.15},
    ),
    "sym-mixup": ("[-1, 1], lr 2e-4, mixup 0.2", {**SYMMETRIC, "mixup": 0.2}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("runs/dataset"))
    parser.add_argument("--out", type=Path, default=Path("runs/imagenet-screen"))
    parser.add_argument("--experiments", default="probe")
    parser.add_argument("--profile", default="fast", help="the profile REFERENCE and each experiment change")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs (smoke runs)")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table", type=Path)
    args = parser.parse_args()
    if args.list:
        for name, (description, settings) in EXPERIMENTS.items():
            print(f"{name:14s} {description}  {settings}")
    elif args.table:
        print(table(args.table))
    else:
        logging.basicConfig(format="%(message)s", stream=sys.stdout)
        logging.getLogger("coronet").setLevel(logging.INFO)
        names = args.experiments.split(",")
        run(args.dataset, args.out, names, args.profile, args.fold, args.epochs, experiments=EXPERIMENTS)


if __name__ == "__main__":
    main()
