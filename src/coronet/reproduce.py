"""``coronet reproduce``: the whole paper end to end, into one directory, with one report.

Stages (each a directory under ``out``; an interrupted run continues where it stopped):

1. ``dataset/`` -- the paper's Table I selection, duplicates removed, patient-grouped folds;
2. ``4class/`` -- cross-validation of the 4-class model (Tables III and IV);
3. ``3class/``, ``binary/`` -- fine-tuned from each fold's 4-class model (Table V);
4. ``dataset2/`` -- fine-tuned on Ozturk et al.'s dataset-2, with ``dataset2/no-overlap/`` for
   the images the 4-class models never saw (Table VI), when the data directory holds it;
5. ``report.md`` / ``report.html`` -- Tables III-VI beside the paper's values, the 95 %
   intervals of every run, and links to each run's own report; ``timings.json``;
6. ``final/`` (with ``final=True``) -- one 4-class model trained on every image, for
   deployment, its card recording the cross-validation figures that vouch for the recipe.

The profile names the settings of every stage (``coronet.profiles``): ``fast`` is the
recipe that trains a working CoroNet from scratch on a CPU, ``paper`` the paper's
protocol, ``quick`` a pipeline check of a few minutes, ``tiny`` a test network.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd

from .data.cohorts import ADULT, COHORTS, SOURCE
from .data.prepare import PAPER_CLASS_COUNTS, PrepareConfig, prepare_dataset
from .data.sources import find_source_root
from .evaluation.audit import AuditConfig, overview_section
from .evaluation.audit import audit as run_audit
from .evaluation.cohorttest import annotate_cards, cohort_test
from .evaluation.figures import plot_overview
from .evaluation.report import (
    DISCLAIMER,
    PAPER,
    data_uri,
    html_table,
    markdown_table,
    render_html,
    source_display,
    summary_lines,
    write_report,
)
from .evaluation.sources import worst_phrase
from .layout import MANIFEST, MODEL_DIR
from .models.modeldir import annotate_card
from .training.finetune import NO_OVERLAP, finetune, ozturk_root
from .training.fit import check_training_config, fit_final, run_cv
from .training.profiles import DECONFOUND, FINETUNE_PROFILES, RUNTIME_FIELDS, get_profile

FINETUNED_TASKS = ("3class", "binary")


#: Profiles whose results only show that the pipeline runs (too little training to mean anything).
PIPELINE_CHECKS = ("quick", "tiny")
RUNTIME_SETTINGS = RUNTIME_FIELDS


def reproduce(
    data: str | os.PathLike,
    out: str | os.PathLike,
    profile: str = "fast",
    counts: dict[str, int | None] | None = None,
    folds: int = 4,
    seed: int = 0,
    dataset2: bool = True,
    dataset2_per_class: int | None = None,
    n_bootstrap: int = 1000,
    progress: bool = False,
    final: bool = False,
    adult_negatives: bool = False,
    adult_per_class: int | None = None,
    source_negatives: bool = False,
    deconfound: bool = False,
    audit: bool = True,
    audit_retrain: bool = True,
    log=print,
    **overrides,
) -> dict:
    """Run every stage (see the module docstring) for ``profile``; return the overview's summary.

    counts: images per class for the 4-class dataset (default: the paper's Table I).
    dataset2: include the dataset-2 stage when the data directory holds dataset-2.
    dataset2_per_class: a seeded sample of dataset-2 per class (smoke runs); default all.
    progress: one progress bar (with an ETA) over each training stage.
    final: also train one model on every image (``out/final/model``) for deployment.
    adult_negatives: train with dataset-2's adult ChestX-ray8 films as extra rows (de-confounding;
        ``coronet data prepare --adult-negatives``), ``adult_per_class`` of each (default all).
    source_negatives: train with the films without COVID-19 of the positives' own collections
        (``source-negatives/``, ``coronet data prepare --source-negatives``).
    deconfound: the model to use: adult and source negatives, and the training settings
        :data:`coronet.training.profiles.DECONFOUND` (measured in docs/RECIPES.md) under ``overrides``.
    audit: run the shortcut audit (``coronet audit``) on the 4-class run; ``audit_retrain``: with
        its test 6 (a model retrained on lungs-removed films, one fold).
    overrides: training settings replacing the profile's in every stage (``epochs=1`` ...).
    """
    data, out = Path(data), Path(out)
    if deconfound:
        adult_negatives = source_negatives = True
        overrides = {**DECONFOUND, **overrides}
    config = get_profile(profile).with_overrides(**overrides)
    if profile not in FINETUNE_PROFILES:
        raise ValueError(f"profile {profile!r} has no fine-tuning settings; choose from {sorted(FINETUNE_PROFILES)}")
    check_training_config(config)  # e.g. ImageNet weights offline: say so before anything is written
    trained_cohorts = [c for c, wanted in ((ADULT, adult_negatives), (SOURCE, source_negatives)) if wanted]
    for cohort in trained_cohorts:
        if not _has_cohort(data, cohort.name):
            raise FileNotFoundError(f"--{cohort.name}-negatives needs {_folder(cohort.name)}/ under {data}")
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    def stage(name: str, work):
        log(f"== {name}")
        started = time.perf_counter()
        result = work()
        timings[name] = round(time.perf_counter() - started, 1)
        (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
        return result

    dataset = out / "dataset"
    if not (dataset / MANIFEST).is_file():
        prepare = PrepareConfig(
            class_counts=dict(counts or PAPER_CLASS_COUNTS),
            folds=folds,
            seed=seed,
            image_size=config.input_size,
            cohorts={cohort.name: str(data) for cohort in trained_cohorts},
            cohort_per_class={ADULT.name: adult_per_class},
        )
        stage("prepare", lambda: prepare_dataset(data, dataset, prepare, log=log))
    stage(
        "4class",
        lambda: run_cv(
            dataset,
            out / "4class",
            config,
            profile=profile,
            resume=True,
            progress=progress,
            log=log,
            record={
                "adult_negatives": adult_negatives,
                "source_negatives": source_negatives,
                "deconfound": deconfound,
            },
        ),
    )
    for name in COHORTS:  # each cohort the run did not train with tests its fold models (held out otherwise)
        if _has_cohort(data, name):
            per_class = dataset2_per_class if name == ADULT.name else None
            stage(
                f"{name}-test",
                lambda name=name, per_class=per_class: cohort_test(
                    out / "4class", COHORTS[name], data, log=log, per_class=per_class
                ),
            )
    audited = None
    if audit:
        audit_json = out / "4class" / "audit" / "audit.json"
        audited = (
            json.loads(audit_json.read_text())
            if audit_json.is_file()
            else stage(
                "audit",
                lambda: run_audit(
                    out / "4class",
                    config=AuditConfig(retrain=audit_retrain, n_bootstrap=n_bootstrap, seed=seed),
                    progress=progress,
                    log=log,
                ),
            )
        )
    if audited is not None:  # the audit's headline, where a model's users read it
        verdicts = audited.get("verdicts") or {}
        headline = verdicts.get("retrained-lungs-removed") or verdicts.get("lungs-removed")
        for fold_path in sorted((out / "4class").glob("fold-*")):
            if headline and (fold_path / MODEL_DIR / "model.json").is_file():
                annotate_card(fold_path / MODEL_DIR, audit=f"{headline} (the run's audit: 4class/audit/audit.md)")
    # the fine-tunes have settings of their own (FINETUNE_PROFILES): only where and how to run carries over
    tuned = {k: v for k, v in overrides.items() if k in RUNTIME_SETTINGS}
    for task in FINETUNED_TASKS:
        stage(
            task,
            lambda task=task: finetune(
                out / "4class", out / task, task=task, profile=profile, resume=True, progress=progress, log=log, **tuned
            ),
        )
    runs = {"4-class": out / "4class", "3-class": out / "3class", "binary": out / "binary"}
    if dataset2 and _has_dataset2(data):
        stage(
            "dataset2",
            lambda: finetune(
                out / "4class",
                out / "dataset2",
                task="3class",
                profile=profile,
                data=data,
                data_per_class=dataset2_per_class,
                resume=True,
                progress=progress,
                log=log,
                **tuned,
            ),
        )
        runs["dataset-2"] = out / "dataset2"
        runs["dataset-2, no overlap"] = out / "dataset2" / NO_OVERLAP
    elif dataset2:
        log(f"dataset-2 not found under {data}: Table VI skipped")

    summaries = stage(
        "reports", lambda: {name: write_report(run, n_bootstrap=n_bootstrap, seed=seed) for name, run in runs.items()}
    )
    annotate_cards(out / "4class", summaries["4-class"])  # the per-source figures, where predict and serve see them
    serve = out / "4class" / "fold-1" / MODEL_DIR
    if final:
        stage(
            "final",
            lambda: fit_final(
                out / "4class",
                out / "final",
                validated_by=_validation(summaries["4-class"]),
                progress=progress,
                log=log,
            ),
        )
        serve = out / "final" / MODEL_DIR
        adult = summaries["4-class"].get("adult")
        recipe = "the cross-validation models of this recipe"
        sources = summaries["4-class"].get("sources") or {}
        annotate_card(  # the recipe's figures, measured over every fold (this model has no held-out films)
            serve,
            false_covid_by_source={
                "worst": sources.get("worst_false_covid"),
                "negative_sources": sources.get("negative_sources"),
                "measured_on": recipe,
            },
        )
        if adult:
            annotate_card(
                serve,
                adult_test={
                    "false_covid_rate": adult["false_covid_all"],
                    "ci": adult["false_covid_all_ci"],
                    "films": adult["n_images"],
                    "patients": adult["n_patients"],
                    "data": "dataset-2 adult ChestX-ray8 films, each predicted by the "
                    "cross-validation model that never trained on it",
                    "measured_on": recipe,
                },
            )
    return write_overview(out, runs, summaries, profile, timings, weights=config.weights, serve=serve, audit=audited)


def _validation(summary: dict) -> dict:
    """What the 4-class cross-validation measured, for the final model's card."""
    return {
        key: summary.get(key)
        for key in ("accuracy", "accuracy_ci", "covid_recall", "covid_recall_ci", "n_images", "n_patients", "adult")
    }


def _has_dataset2(data: Path) -> bool:
    try:
        ozturk_root(data)
    except FileNotFoundError:
        return False
    return True


def _has_cohort(data: Path, name: str) -> bool:
    """Whether the data directory (or folder) holds cohort ``name``'s source."""
    cohort = COHORTS[name]
    try:
        find_source_root(cohort.source, data, cohort.markers)
    except FileNotFoundError:
        return False
    return True


def _folder(name: str) -> str:
    from .data.sources import get_source

    return get_source(COHORTS[name].source).folder


def write_overview(
    out: Path,
    runs: dict[str, Path],
    summaries: dict[str, dict],
    profile: str,
    timings: dict[str, float],
    weights: str = "none",
    serve: Path | None = None,
    audit: dict | None = None,
) -> dict:
    """``out/report.md`` and ``out/report.html``: Tables III-VI beside the paper's, intervals, links."""
    four = runs["4-class"] / "report"
    table3 = pd.read_csv(four / "table3.csv", index_col=0)
    table4 = pd.read_csv(four / "table4.csv", index_col=0)
    table5 = pd.concat(
        [pd.read_csv(runs[name] / "report" / "table5.csv", index_col=0) for name in ("4-class", "3-class", "binary")]
    )
    table5.to_csv(out / "table5.csv")
    four_summary = summaries.get("4-class") or {}
    by_source = pd.read_csv(four / "sources.csv")
    by_source.to_csv(out / "sources.csv", index=False)
    tables = {
        "4-class by source: each (source, label)'s share called COVID-19 and recall of its own label (95% CI "
        "over patients); " + worst_phrase((four_summary.get("sources") or {}).get("worst_false_covid")): (
            source_display(by_source)
        ),
        "Table III: 4-class, per fold (percent)": table3,
        "Table IV: 4-class, per class (percent)": table4,
        "Table V: per task, fold means (percent)": table5,
    }
    if "dataset-2" in runs:
        parts = {
            name: pd.read_csv(runs[name] / "report" / "table6.csv", index_col=0)
            for name in ("dataset-2", "dataset-2, no overlap")
        }
        table6 = pd.concat(parts, names=["images", "class"])
        table6.index = [f"{images}: {cls}" for images, cls in table6.index]
        table6.index.name = "images: class"
        table6.to_csv(out / "table6.csv")
        tables["Table VI: dataset-2, all images and without the 4-class films/patients (percent)"] = table6

    intervals = pd.DataFrame(
        [
            {
                "run": name,
                "images": s["n_images"],
                "patients": s["n_patients"],
                "accuracy": s["accuracy"],
                "accuracy 95% CI": _ci(s["accuracy_ci"]),
                "covid recall": s["covid_recall"],
                "covid recall 95% CI": _ci(s["covid_recall_ci"]),
                "adult films called covid": (s.get("adult") or {}).get("false_covid_all"),
                "adult 95% CI": _ci((s.get("adult") or {}).get("false_covid_all_ci")),
                "worst negative source": (_worst(s) or {}).get("source"),
                "its films called covid": (_worst(s) or {}).get("rate"),
                "worst 95% CI": _ci((_worst(s) or {}).get("ci")),
            }
            for name, s in summaries.items()
        ]
    ).set_index("run")
    intervals.to_csv(out / "intervals.csv")
    paper_accuracy = {
        "4-class": PAPER["table5"]["4-class"]["accuracy"] / 100,
        "3-class": PAPER["table5"]["3-class"]["accuracy"] / 100,
        "binary": PAPER["table5"]["binary"]["accuracy"] / 100,
        "dataset-2": PAPER["table6"]["accuracy"] / 100,
    }
    figure = plot_overview(summaries, paper_accuracy, out / "overview.png")
    pipeline_check = profile in PIPELINE_CHECKS
    summary = {
        "profile": profile,
        "pipeline_check": pipeline_check,
        "initial_weights": weights,
        "audit": None
        if audit is None
        else {
            "verdicts": audit["verdicts"],
            "tests": {name: test["accuracy"] for name, test in audit["tests"].items()},
            "chance": audit["chance"],
        },
        "model": str(serve.resolve()) if serve is not None else None,
        "report": str((out / "report.html").resolve()),
        "timings_s": timings,
        "runs": {
            name: {
                "dir": str(runs[name].resolve()),
                "accuracy": s["accuracy"],
                "accuracy_ci": s["accuracy_ci"],
                "covid_recall": s["covid_recall"],
                "covid_recall_ci": s["covid_recall_ci"],
                "adult": s.get("adult"),
                "sources": s.get("sources"),
            }
            for name, s in summaries.items()
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    title = (
        f"Pipeline check, not a result ({profile} profile)"
        if pipeline_check
        else f"CoroNet reproduction ({profile} profile)"
    )
    links = {name: os.path.relpath(run / "report" / "report.html", out) for name, run in runs.items()}
    start = (
        "scratch (random initialisation)"
        if weights in ("none", None, "")
        else "ImageNet-pretrained weights"
        if weights == "imagenet"
        else f"the weights in {weights}"
    )
    md = [
        f"# {title}",
        "",
        f"*{DISCLAIMER}*",
        "",
        "![accuracy per task, ours with 95% CI and the paper's](overview.png)",
        "",
        f"Every 4-class model started from {start}; the fine-tuned models from the 4-class models of their fold.",
        "",
        "## Accuracy and COVID-19 recall, 95% intervals (bootstrap over patients)",
        "",
        markdown_table(intervals),
        "",
    ]
    if audit is not None:
        audit_md, audit_html = overview_section(audit)
        md += [
            "## Is it looking at the lungs?",
            "",
            audit_md,
            "",
            f"Details: [4class/audit/audit.html]({os.path.relpath(runs['4-class'] / 'audit' / 'audit.html', out)})",
            "",
        ]
    for name, table in tables.items():
        md += [f"## {name}", "", markdown_table(table), ""]
    md += (
        ["## Runs", ""]
        + [f"- {name}: [{links[name]}]({links[name]})" for name in runs]
        + ["", "## Time per stage (s)", "", *[f"- {k}: {v}" for k, v in timings.items()], ""]
    )
    (out / "report.md").write_text("\n".join(md))
    sections = [
        (
            "Ours and the paper's, task by task",
            f"<img src='{data_uri(figure)}' alt='accuracy per task, ours with 95% CI and the paper's'>",
        ),
        (
            "Initial weights",
            f"<p>Every 4-class model started from {start}; the fine-tuned models from the "
            "4-class models of their fold.</p>",
        ),
        ("Accuracy and COVID-19 recall, 95% intervals (bootstrap over patients)", html_table(intervals)),
        *(
            [
                (
                    "Is it looking at the lungs?",
                    audit_html
                    + "<p><a href='"
                    + os.path.relpath(runs["4-class"] / "audit" / "audit.html", out)
                    + "'>the full audit</a></p>",
                )
            ]
            if audit is not None
            else []
        ),
        *[(name, html_table(table)) for name, table in tables.items()],
        ("Runs", "<ul>" + "".join(f"<li><a href='{links[n]}'>{n}</a></li>" for n in runs) + "</ul>"),
        ("Time per stage (s)", "<ul>" + "".join(f"<li>{k}: {v}</li>" for k, v in timings.items()) + "</ul>"),
    ]
    (out / "report.html").write_text(render_html(title, sections), encoding="utf-8")
    return summary


def _worst(summary: dict) -> dict | None:
    return (summary.get("sources") or {}).get("worst_false_covid")


def _ci(ci) -> str:
    return "" if ci is None else f"{ci[0]:.3f}-{ci[1]:.3f}"


def overview_lines(summary: dict) -> list[str]:
    """What ``coronet reproduce`` prints last: the report, each run's headline figures, the model to serve."""
    lines = []
    if summary.get("pipeline_check"):
        lines.append(
            f"PIPELINE CHECK, NOT A RESULT: the {summary['profile']} profile trains too little for its "
            "figures to mean anything (use --profile fast)"
        )
    lines.append(f"report: {summary['report']}")
    for name, run in summary["runs"].items():
        lines += [f"{name}: {line}" for line in summary_lines({**run, "n_patients": None})]
        if name == "4-class" and not run.get("adult"):
            lines.append(f"{name}: adult films called covid n/a (no dataset-2 for the adult-negative test)")
    verdicts = (summary.get("audit") or {}).get("verdicts") or {}
    headline = verdicts.get("retrained-lungs-removed") or verdicts.get("lungs-removed")
    if headline:
        lines.append(f"shortcut audit: {headline}")
    if summary.get("model"):
        worst = _worst(summary["runs"].get("4-class") or {})
        lines.append(f"model to use: coronet serve --model {summary['model']} ({worst_phrase(worst)})")
    return lines


__all__ = ["overview_lines", "reproduce", "write_overview"]
