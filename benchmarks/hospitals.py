"""The screen behind docs/RECIPES.md's "More hospitals": COVID-19 films of a second collection (BIMCV, through the
COVID-19 Radiography Database), the levers beside them, and collections left out whole -- on one fold.

    coronet weights fetch
    coronet data prepare --data DATA --out runs/ds-deconfound --adult-negatives DATA --source-negatives DATA
    coronet data prepare ... --radiography DATA --radiography-count 311 --out runs/ds-bimcv311   # Table I's prior
    coronet data prepare ... --radiography DATA --out runs/ds-bimcv-all                          # every BIMCV film
    python benchmarks/hospitals.py --datasets runs --out runs/hospitals --experiments none,bimcv311,adversary
    python benchmarks/hospitals.py --table runs/hospitals

Each experiment names a prepared dataset (``DATASETS``, found under ``--datasets``) and the settings over the
``--profile`` (default ``imagenet``) with ``coronet reproduce --deconfound``'s levers
(:data:`coronet.training.profiles.DECONFOUND`). It is cross-validated on ``--fold`` only (``run_cv``), a held-out
collection's films of that fold predicted by the fold's model (``leave_out_test``), and reported with
``coronet report``. A finished run is skipped; an interrupted one continues from its checkpoint.

Each row: Table I accuracy; per positive collection its COVID-19 recall and the AUC of prob_covid against
ieee8023's films without COVID-19 (a held-out collection is marked); the share called COVID-19 of each negative
source; minutes and the CPU. Pick by the held-out and per-source columns, never by Table I alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from coronet.evaluation.cohorttest import leave_out_test
from coronet.evaluation.report import write_report
from coronet.training.fit import resolve_precision, run_cv
from coronet.training.profiles import DECONFOUND, get_profile
from shortcuts import cpu_name

#: dataset name -> the folder under --datasets (prepared as the module docstring says)
DATASETS = {"deconfound": "ds-deconfound", "bimcv311": "ds-bimcv311", "bimcv-all": "ds-bimcv-all"}

#: name -> (what it tests, dataset, settings over the profile and DECONFOUND)
EXPERIMENTS: dict[str, tuple[str, str, dict]] = {
    "none": ("no BIMCV film (the de-confounded data of issue 17)", "deconfound", {}),
    "bimcv311": ("308 BIMCV films: COVID-19 keeps Table I's share (22.6 %)", "bimcv311", {}),
    "bimcv-all": ("every BIMCV film (1677): COVID-19 is 49 % of the films", "bimcv-all", {}),
    "adversary": (
        "308 BIMCV films, source adversary 0.3 (per label: COVID-19 from ieee8023 vs BIMCV now contrasts)",
        "bimcv311",
        {"source_adversary": 0.3},
    ),
    "balance1": (
        "308 BIMCV films, (source, label) groups fully balanced: ieee8023's 41 non-COVID films weigh as a group",
        "bimcv311",
        {"source_balance": 1.0},
    ),
    "lo-cohen": (
        "ieee8023 left out (its COVID-19 and non-COVID films): BIMCV's are the only positives",
        "bimcv-all",
        {"leave_out": "cohen"},
    ),
    "lo-radiography": ("BIMCV left out: ieee8023's are the only positives", "bimcv-all", {"leave_out": "radiography"}),
    "lo-actualmed": ("Actualmed's normals left out", "bimcv311", {"leave_out": "actualmed"}),
}
NEGATIVES = {"ozturk": "dataset-2 adults", "cohen": "ieee8023 non-COVID", "actualmed": "Actualmed normals"}
POSITIVES = {"cohen": "ieee8023", "radiography": "BIMCV"}


def run(datasets: Path, out: Path, names: list[str], profile: str, fold: int, log=print) -> None:
    for name in names:
        if name not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {name!r}; --list shows them")
        run_dir = out / name
        if (run_dir / "result.json").is_file():
            log(f"{name}: done, skipped")
            continue
        description, dataset, settings = EXPERIMENTS[name]
        config = get_profile(profile).with_overrides(**{**DECONFOUND, **settings})
        log(f"{name}: {description}")
        started = time.perf_counter()
        dataset_dir = datasets / DATASETS[dataset]
        run_cv(dataset_dir, run_dir, config, profile=profile, folds=[fold], resume=True, progress=False)
        if config.leave_out:
            leave_out_test(run_dir)
        minutes = (time.perf_counter() - started) / 60
        summary = write_report(run_dir).to_json()
        result = {
            "name": name,
            "what": description,
            "dataset": dataset,
            "settings": settings,
            "profile": profile,
            "fold": fold,
            "epochs": config.epochs,
            "minutes": round(minutes, 1),
            "precision": resolve_precision(config),
            "cpu": cpu_name(),
            "load_1min": round(os.getloadavg()[0], 2),
            "accuracy": summary["accuracy"],
            "covid_recall": summary["covid_recall"],
            "sources": summary["sources"]["sources"],
            "negative_sources": summary["sources"]["negative_sources"],
            "leave_out": summary.get("leave_out"),
        }
        (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        for checkpoint in run_dir.glob("fold-*/checkpoints/last.ckpt"):
            checkpoint.unlink()
        log(f"{name}: accuracy {summary['accuracy']:.3f}, {minutes:.1f} min")


def _positive_cells(result: dict) -> list[str]:
    rows = {(r["source"], r["label"]): r for r in result["sources"]}
    held = (result.get("leave_out") or {}).get("rows") or []
    rows.update({(r["source"], r["label"]): {**r, "held out": True} for r in held})
    cells = []
    for source in POSITIVES:
        row = rows.get((source, "covid"))
        if row is None:
            cells += ["", ""]
            continue
        mark = " (held out)" if row.get("held out") else ""
        cells.append(f"{row['recall']:.2f} of {row['images']}{mark}")
        auc = row.get("auc vs cohen non-covid")
        cells.append("" if auc is None or auc != auc else f"{auc:.2f}")
    return cells


def _negative_cells(result: dict) -> list[str]:
    rates = {row["source"]: row for row in result["negative_sources"]}
    for row in (result.get("leave_out") or {}).get("rows") or []:  # a held-out negative collection
        if row["label"] != "covid" and row["source"] not in rates:
            rates[row["source"]] = {"false covid": row["called covid"], "images": row["images"]}
    cells = []
    for source in NEGATIVES:
        row = rates.get(source)
        cells.append("" if row is None else f"{row['false covid']:.1%} of {row['images']}")
    return cells


def table(out: Path) -> str:
    header = (
        ["experiment", "what", "Table I acc"]
        + [f"{name} COVID-19 recall | AUC vs ieee8023 non-COVID" for name in POSITIVES.values()]
        + [f"{name} called COVID-19" for name in NEGATIVES.values()]
        + ["minutes"]
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * (len(header) + len(POSITIVES))]
    for path in sorted(out.glob("*/result.json"), key=lambda p: p.stat().st_mtime):
        r = json.loads(path.read_text())
        cells = [r["name"], r["what"], f"{r['accuracy']:.3f}", *_positive_cells(r), *_negative_cells(r)]
        lines.append("| " + " | ".join(cells) + f" | {r['minutes']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=Path("runs"), help="the folder holding DATASETS")
    parser.add_argument("--out", type=Path, default=Path("runs/hospitals"))
    parser.add_argument("--experiments", default="none,bimcv311")
    parser.add_argument("--profile", default="imagenet")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table", type=Path)
    args = parser.parse_args()
    if args.list:
        for name, (description, dataset, settings) in EXPERIMENTS.items():
            print(f"{name:15s} {dataset:11s} {description}  {settings}")
    elif args.table:
        print(table(args.table))
    else:
        logging.basicConfig(format="%(message)s", stream=sys.stdout)
        logging.getLogger("coronet").setLevel(logging.INFO)
        run(args.datasets, args.out, args.experiments.split(","), args.profile, args.fold)


if __name__ == "__main__":
    main()
