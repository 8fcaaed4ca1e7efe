"""What ``coronet reproduce`` reports last: ``summary.json``, the overview report (``report.md`` / ``report.html``:
Tables III-VI beside the paper's, every run's 95 % intervals, the audit, links to each run's own report) and the
lines the command prints."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..evaluation.audit import overview_blocks
from ..evaluation.figures import plot_overview
from ..evaluation.pages import Bullets, Figure, Link, Page, Section, Table, Text, write_page
from ..evaluation.report import PAPER, single_label_note, source_display, summary_lines
from ..evaluation.results import AuditResults, Estimate, RunResults, WorstSource
from ..evaluation.sources import SOURCE_COLUMNS, worst_phrase
from ..layout import ReportDir, ReproduceDir, RunDir

#: Profiles whose results only show that the pipeline runs (too little training to mean anything).
PIPELINE_CHECKS = ("quick", "tiny")


@dataclass
class Overview:
    """What a reproduction measured (``summary.json`` beside the overview report): every run's headline
    figures, the audit, the model to serve, the time per stage."""

    profile: str
    initial_weights: str
    runs: dict[str, RunResults]
    dirs: dict[str, Path]  #: run name -> its directory
    report: Path  #: the overview's HTML page
    timings: dict[str, float]
    audit: AuditResults | None = None
    model: Path | None = None  #: the model to serve

    @property
    def pipeline_check(self) -> bool:
        return self.profile in PIPELINE_CHECKS

    def to_json(self) -> dict:
        return {
            "profile": self.profile,
            "pipeline_check": self.pipeline_check,
            "initial_weights": self.initial_weights,
            "audit": None
            if self.audit is None
            else {
                "verdicts": self.audit.verdicts,
                "tests": {name: test.accuracy.to_json() for name, test in self.audit.tests.items()},
                "chance": self.audit.chance,
            },
            "model": str(self.model.resolve()) if self.model is not None else None,
            "report": str(self.report.resolve()),
            "timings_s": self.timings,
            "runs": {name: _run_record(self.dirs[name], results) for name, results in self.runs.items()},
        }


def _run_record(directory: Path, results: RunResults) -> dict:
    record = results.to_json()
    return {
        "dir": str(directory.resolve()),
        **{key: record[key] for key in ("accuracy", "accuracy_ci", "covid_recall", "covid_recall_ci")},
        "adult": record["adult"],
        "sources": record["sources"],
        "leave_out": record["leave_out"],
    }


def write_overview(
    out: Path,
    runs: dict[str, Path],
    results: dict[str, RunResults],
    profile: str,
    timings: dict[str, float],
    weights: str = "none",
    serve: Path | None = None,
    audit: AuditResults | None = None,
) -> Overview:
    """``out/report.md`` and ``out/report.html``: Tables III-VI beside the paper's, intervals, links."""
    files = ReproduceDir(out).report
    overview = Overview(profile, weights, results, runs, files.html, timings, audit, serve)
    tables = _overview_tables(files, runs, results["4-class"].worst if "4-class" in results else None)
    intervals = _intervals(results)
    intervals.to_csv(files.table("intervals"))
    paper_accuracy = {
        "4-class": PAPER["table5"]["4-class"]["accuracy"] / 100,
        "3-class": PAPER["table5"]["3-class"]["accuracy"] / 100,
        "binary": PAPER["table5"]["binary"]["accuracy"] / 100,
        "dataset-2": PAPER["table6"]["accuracy"] / 100,
    }
    accuracies = {name: run.accuracy for name, run in results.items()}
    figure = plot_overview(accuracies, paper_accuracy, files.figure("overview"))
    files.summary.write_text(json.dumps(overview.to_json(), indent=2) + "\n")
    audit_page = os.path.relpath(RunDir(runs["4-class"]).audit.html, out)
    links = {name: os.path.relpath(RunDir(run).report.html, out) for name, run in runs.items()}
    write_page(_overview_page(overview, figure, intervals, tables, links, audit_page), files.markdown, files.html)
    return overview


def _overview_tables(overview: ReportDir, runs: dict[str, Path], worst: WorstSource | None) -> dict[str, pd.DataFrame]:
    """The per-source table and Tables III-VI, from the runs' reports; the combined ones written as CSV."""
    four = RunDir(runs["4-class"]).report
    table3 = pd.read_csv(four.table("table3"), index_col=0)
    table4 = pd.read_csv(four.table("table4"), index_col=0)
    table5 = pd.concat(
        [
            pd.read_csv(RunDir(runs[name]).report.table("table5"), index_col=0)
            for name in ("4-class", "3-class", "binary")
        ]
    )
    table5.to_csv(overview.table("table5"))
    by_source = pd.read_csv(four.table("sources"))
    by_source.to_csv(overview.table("sources"), index=False)
    tables = {
        "4-class by source: each (source, label)'s share called COVID-19 and recall of its own label (95% CI "
        "over patients); " + worst_phrase(worst): source_display(by_source),
        "Table III: 4-class, per fold (percent)": table3,
        "Table IV: 4-class, per class (percent)": table4,
        "Table V: per task, fold means (percent)": table5,
    }
    if "dataset-2" in runs:
        parts = {
            name: pd.read_csv(RunDir(runs[name]).report.table("table6"), index_col=0)
            for name in ("dataset-2", "dataset-2, no overlap")
        }
        table6 = pd.concat(parts, names=["images", "class"])
        table6.index = [f"{images}: {cls}" for images, cls in table6.index]
        table6.index.name = "images: class"
        table6.to_csv(overview.table("table6"))
        tables["Table VI: dataset-2, all images and without the 4-class films/patients (percent)"] = table6
    return tables


def _intervals(results: dict[str, RunResults]) -> pd.DataFrame:
    """Each run's accuracy, COVID-19 recall and false-COVID rates with their 95% intervals."""
    return pd.DataFrame(
        [
            {
                "run": name,
                "images": r.n_images,
                "patients": r.n_patients,
                "accuracy": r.accuracy.value,
                "accuracy 95% CI": _ci(r.accuracy),
                "covid recall": r.covid_recall.value if r.covid_recall else None,
                "covid recall 95% CI": _ci(r.covid_recall),
                "adult films called covid": r.adult.false_covid_all.value if r.adult else None,
                "adult 95% CI": _ci(r.adult.false_covid_all if r.adult else None),
                "worst negative source": r.worst.source if r.worst else None,
                "its films called covid": r.worst.rate.value if r.worst else None,
                "worst 95% CI": _ci(r.worst.rate if r.worst else None),
            }
            for name, r in results.items()
        ]
    ).set_index("run")


def _ci(estimate: Estimate | None) -> str:
    return "" if estimate is None else f"{estimate.low:.3f}-{estimate.high:.3f}"


def _start_phrase(weights: str | None) -> str:
    if weights in ("none", None, ""):
        return "scratch (random initialisation)"
    return "ImageNet-pretrained weights" if weights == "imagenet" else f"the weights in {weights}"


def _overview_page(
    overview: Overview,
    figure: Path,
    intervals: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    links: dict[str, str],
    audit_page: str,
) -> Page:
    title = (
        f"Pipeline check, not a result ({overview.profile} profile)"
        if overview.pipeline_check
        else f"CoroNet reproduction ({overview.profile} profile)"
    )
    weights = (
        f"Every 4-class model started from {_start_phrase(overview.initial_weights)}; the fine-tuned models from "
        "the 4-class models of their fold."
    )
    sections = [
        Section(
            "Ours and the paper's, task by task",
            [Figure(figure, "accuracy per task, ours with 95% CI and the paper's", wide=True), Text(weights)],
        ),
        Section(
            "Accuracy and COVID-19 recall, 95% intervals (bootstrap over patients)",
            [
                Table(intervals),
                *[Text(f"{name}: {single_label_note(r)}") for name, r in overview.runs.items() if r.single_label],
            ],
        ),
    ]
    if overview.audit is not None:
        sections.append(Section("Is it looking at the lungs?", overview_blocks(overview.audit, audit_page)))
    sections += [Section(name, [Table(table)]) for name, table in tables.items()]
    held = overview.runs["4-class"].leave_out if "4-class" in overview.runs else None
    if held:
        sections.append(
            Section(
                f"Held-out collection {held.source}: no 4-class model trained on its films (each predicted by its "
                "fold's model; 95% CIs over patients)",
                [Table(source_display(pd.DataFrame(held.rows, columns=SOURCE_COLUMNS)))],
            )
        )
    sections += [
        Section("Runs", [Bullets(tuple(Link(name, link) for name, link in links.items()))]),
        Section("Time per stage (s)", [Bullets(tuple(f"{k}: {v}" for k, v in overview.timings.items()))]),
    ]
    return Page(title, sections)


def overview_lines(overview: Overview) -> list[str]:
    """What ``coronet reproduce`` prints last: the report, each run's headline figures, the model to serve."""
    lines = []
    if overview.pipeline_check:
        lines.append(
            f"PIPELINE CHECK, NOT A RESULT: the {overview.profile} profile trains too little for its "
            "figures to mean anything (use --profile fast)"
        )
    lines.append(f"report: {overview.report.resolve()}")
    for name, run in overview.runs.items():
        lines += [f"{name}: {line}" for line in summary_lines(run, patients=False)]
        if name == "4-class" and not run.adult:
            lines.append(f"{name}: adult films called covid n/a (no dataset-2 for the adult-negative test)")
    headline = overview.audit.headline if overview.audit else None
    if headline:
        lines.append(f"shortcut audit: {headline}")
    if overview.model is not None:
        four = overview.runs.get("4-class")
        worst = four.worst if four else None
        lines.append(f"model to use: coronet serve --model {overview.model.resolve()} ({worst_phrase(worst)})")
    return lines
