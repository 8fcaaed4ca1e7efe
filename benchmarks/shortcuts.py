"""The screen behind docs/RECIPES.md's "Disease, not source": the levers against acquisition shortcuts, one fold.

    coronet data prepare --data ../shared/data --out runs/dataset-deconfound \\
        --adult-negatives ../shared/data --adult-per-class 250 --source-negatives ../shared/data
    python benchmarks/shortcuts.py --dataset runs/dataset-deconfound --out runs/shortcuts --experiments base,all
    python benchmarks/shortcuts.py --list                       # the experiments and their settings
    python benchmarks/shortcuts.py --table runs/shortcuts       # the Markdown rows of every finished run

Each experiment is the ``fast`` profile with some levers on (``EXPERIMENTS``), trained with the
project's own code (``coronet.training.fit.fit_fold``) on every fold but ``--fold`` of a dataset
with adult and source negatives, validated on that fold, and reported with ``coronet report``
(Table I figures on the Table I rows; the per-source table on every validation film). A finished
run is skipped; an interrupted one continues from its checkpoint.

Each row: Table I accuracy and COVID-19 recall; the share called COVID-19 of each negative source
(dataset-2's adult ChestX-ray8 films, ieee8023's non-COVID films, Actualmed's normals, and the
Table I negatives of Kermany et al.), and the worst of them; epochs, minutes, the CPU.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd

from coronet.evaluation.report import write_report
from coronet.training.fit import fit_fold, resolve_precision
from coronet.training.profiles import get_profile

#: Acquisition augmentation at the strengths screened: a realistic spread of scanners and upload chains.
ACQUISITION = {"gamma": 0.4, "blur": 1.0, "noise": 0.03, "jpeg": 30, "resample": 0.5}

#: name -> (what it changes, settings over the profile).
EXPERIMENTS: dict[str, tuple[str, dict]] = {
    "smoke": ("pipeline smoke test: 1 epoch on 8 images per class", {"epochs": 1, "train_per_class": 8}),
    "base": ("the fast profile, adult and source negatives, no lever", {}),
    "crop": ("crop to the lung field (the audit's box)", {"crop": "lungs"}),
    "equalize": ("per-film histogram equalisation", {"equalize": True}),
    "acquisition": ("acquisition augmentation: gamma, blur, noise, JPEG, down-and-up resampling", ACQUISITION),
    "adversary": ("source adversary (gradient reversal, per label), weight 0.3", {"source_adversary": 0.3}),
    "crop+eq": ("crop and equalisation", {"crop": "lungs", "equalize": True}),
    "balance": (
        "(source, label) groups balanced in the loss, weights count^-0.5 (ieee8023's non-COVID films ~5x)",
        {"source_balance": 0.5},
    ),
    "balance1": ("(source, label) groups fully balanced in the loss (count^-1)", {"source_balance": 1.0}),
    "balance+crop+eq": (
        "balanced (source, label) groups (count^-0.5), crop and equalisation",
        {"source_balance": 0.5, "crop": "lungs", "equalize": True},
    ),
    "all": (
        "crop, equalisation, acquisition augmentation and the source adversary (0.3)",
        {"crop": "lungs", "equalize": True, "source_adversary": 0.3, **ACQUISITION},
    ),
}

#: Negative sources in the order the table shows them.
NEGATIVE_SOURCES = {"ozturk": "dataset-2 adults", "cohen": "ieee8023 non-COVID", "actualmed": "Actualmed normals"}


def cpu_name() -> str:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "cpu"
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), "cpu")
    return name + (" (AVX512-BF16)" if "avx512_bf16" in text else " (AVX2, no bf16)")


def run(
    dataset: Path,
    out: Path,
    names: list[str],
    profile: str,
    fold: int,
    epochs: int | None,
    log=print,
    experiments: dict[str, tuple[str, dict]] = EXPERIMENTS,
) -> None:
    for name in names:
        if name not in experiments:
            raise SystemExit(f"unknown experiment {name!r}; --list shows them")
        run_dir = out / name
        if (run_dir / "result.json").is_file():
            log(f"{name}: done, skipped")
            continue
        description, settings = experiments[name]
        config = get_profile(profile).with_overrides(**settings, **({"epochs": epochs} if epochs else {}))
        log(f"{name}: {description}")
        started = time.perf_counter()
        fit_fold(dataset, fold, run_dir, config, resume=True, progress=False)
        minutes = (time.perf_counter() - started) / 60
        summary = write_report(run_dir).to_json()
        metrics = pd.read_csv(run_dir / "metrics.csv")
        result = {
            "name": name,
            "lever": description,
            "settings": settings,
            "profile": profile,
            "fold": fold,
            "epochs": config.epochs,
            "minutes": round(minutes, 1),
            "train_minutes": round(float(metrics["seconds"].sum()) / 60, 1),
            "precision": resolve_precision(config),
            "cpu": cpu_name(),
            "load_1min": round(os.getloadavg()[0], 2),
            "accuracy": summary["accuracy"],
            "covid_recall": summary["covid_recall"],
            "negative_sources": summary["sources"]["negative_sources"],
            "worst": summary["sources"]["worst_false_covid"],
        }
        (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        (run_dir / "checkpoints" / "last.ckpt").unlink(missing_ok=True)
        figures = f"accuracy {summary['accuracy']:.3f}, COVID-19 recall {summary['covid_recall']:.3f}"
        log(f"{name}: {figures}, {minutes:.1f} min")


def table(out: Path) -> str:
    shown = [*NEGATIVE_SOURCES.values(), "Kermany (Table I)"]
    lines = [
        "| experiment | lever | Table I acc | COVID-19 recall | "
        + " | ".join(f"{s} called COVID" for s in shown)
        + " | epochs | minutes | CPU |",
        "|---|---|---|---|" + "---|" * len(shown) + "---|---|---|",
    ]
    for path in sorted(out.glob("*/result.json"), key=lambda p: p.stat().st_mtime):
        r = json.loads(path.read_text())
        rates = {row["source"]: row for row in r["negative_sources"]}
        cells = [_rate_cell(rates.get(s)) for s in [*NEGATIVE_SOURCES, "kaggle"]]
        lines.append(
            f"| {r['name']} | {r['lever']} | {r['accuracy']:.3f} | {r['covid_recall']:.3f} | "
            + " | ".join(cells)
            + f" | {r['epochs']} | {r['minutes']} | {r['cpu']}, {r['precision']} |"
        )
    return "\n".join(lines)


def _rate_cell(row: dict | None) -> str:
    """``"48.8% (20/41)"``: the false COVID-19 rate with its counts."""
    if row is None:
        return ""
    return f"{row['false covid']:.1%} ({round(row['false covid'] * row['images'])}/{row['images']})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=Path("runs/dataset-deconfound"))
    parser.add_argument("--out", type=Path, default=Path("runs/shortcuts"))
    parser.add_argument("--experiments", default="base")
    parser.add_argument("--profile", default="fast")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=None, help="override the profile's epochs (smoke runs)")
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
        run(args.dataset, args.out, args.experiments.split(","), args.profile, args.fold, args.epochs)


if __name__ == "__main__":
    main()
