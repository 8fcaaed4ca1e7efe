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
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .data.cohorts import ADULT, COHORTS, RADIOGRAPHY, SOURCE
from .data.prepare import PAPER_CLASS_COUNTS, PrepareConfig, prepare_dataset
from .data.sources import find_source_root
from .evaluation.audit import AuditConfig, overview_blocks
from .evaluation.audit import audit as run_audit
from .evaluation.cohorttest import annotate_cards, cohort_test, leave_out_test, source_card_entry
from .evaluation.figures import plot_overview
from .evaluation.pages import Bullets, Figure, Link, Page, Section, Table, Text, write_page
from .evaluation.report import PAPER, single_label_note, source_display, summary_lines, write_report
from .evaluation.results import AuditResults, Estimate, RunResults, WorstSource
from .evaluation.sources import SOURCE_COLUMNS, worst_phrase
from .layout import ReportDir, ReproduceDir, RunDir, atomic_path
from .models.modeldir import annotate_card
from .tasks import FOUR_CLASS, get_task
from .training.finetune import finetune, ozturk_root
from .training.fit import check_training_config, fit_final, run_cv
from .training.profiles import DECONFOUND, FINETUNE_PROFILES, RUNTIME_FIELDS, get_profile

logger = logging.getLogger(__name__)

FINETUNED_TASKS = ("3class", "binary")
DATASET2 = "dataset2"


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
    radiography: bool = False,
    radiography_count: int | None = None,
    **overrides,
) -> Overview:
    """Run every stage (see the module docstring) for ``profile``; return what the overview reports.

    counts: images per class for the 4-class dataset (default: the paper's Table I).
    dataset2: include the dataset-2 stage when the data directory holds dataset-2.
    dataset2_per_class: a seeded sample of dataset-2 per class (smoke runs); default all.
    progress: one progress bar (with an ETA) over each training stage.
    final: also train one model on every image (``out/final/model``) for deployment.
    adult_negatives: train with dataset-2's adult ChestX-ray8 films as extra rows (de-confounding;
        ``coronet data prepare --adult-negatives``), ``adult_per_class`` of each (default all).
    source_negatives: train with the films without COVID-19 of the positives' own collections
        (``source-negatives/``, ``coronet data prepare --source-negatives``).
    deconfound: the model to use: adult and source negatives, the BIMCV films where ``radiography/`` is there,
        and the training settings :data:`coronet.training.profiles.DECONFOUND` (docs/RECIPES.md) under ``overrides``.
    radiography: train with the BIMCV-COVID19+ films of the COVID-19 Radiography Database (``radiography/``,
        ``coronet data prepare --radiography``), a seeded ``radiography_count`` of them (default all).
    A ``leave_out`` setting (in ``overrides``) trains every stage without that source's films; the 4-class
        run's fold models then test them (``4class/leave-out/``).
    audit: run the shortcut audit (``coronet audit``) on the 4-class run; ``audit_retrain``: with
        its test 6 (a model retrained on lungs-removed films, one fold).
    overrides: training settings replacing the profile's in every stage (``epochs=1`` ...).
    """
    data, root = Path(data), ReproduceDir(out)
    if deconfound:
        adult_negatives = source_negatives = True
        radiography = radiography or _has_cohort(data, RADIOGRAPHY.name)
        overrides = {**DECONFOUND, **overrides}
        bimcv = "the BIMCV COVID-19 films of radiography/" if radiography else f"no radiography/ under {data}"
        logger.info(f"deconfound: adult and source negatives, {bimcv}")
    if radiography_count is not None and not radiography:
        raise ValueError(f"--radiography-count needs --radiography (or --deconfound with radiography/ under {data})")
    config = get_profile(profile).with_overrides(**overrides)
    if profile not in FINETUNE_PROFILES:
        raise ValueError(f"profile {profile!r} has no fine-tuning settings; choose from {sorted(FINETUNE_PROFILES)}")
    check_training_config(config)  # e.g. ImageNet weights offline: say so before anything is written
    wanted = ((ADULT, adult_negatives), (SOURCE, source_negatives), (RADIOGRAPHY, radiography))
    trained_cohorts = [cohort for cohort, chosen in wanted if chosen]
    for cohort in trained_cohorts:
        if not _has_cohort(data, cohort.name):
            raise FileNotFoundError(f"{cohort.flag} needs {_folder(cohort.name)}/ under {data}")
    root.path.mkdir(parents=True, exist_ok=True)
    steps = _Steps(data, root, profile, progress)
    if not root.dataset.exists():
        prepare = PrepareConfig(
            class_counts=dict(counts or PAPER_CLASS_COUNTS),
            folds=folds,
            seed=seed,
            image_size=config.input_size,
            cohorts={cohort.name: str(data) for cohort in trained_cohorts},
            cohort_per_class={ADULT.name: adult_per_class, RADIOGRAPHY.name: radiography_count},
        )
        steps.stage("prepare", lambda: prepare_dataset(data, root.dataset.path, prepare))
    cohorts = {"adult_negatives": adult_negatives, "source_negatives": source_negatives, "deconfound": deconfound}
    steps.cross_validate(config, {**cohorts, "radiography": radiography})
    if config.leave_out:
        steps.stage("leave-out", lambda: leave_out_test(steps.four.path))
    steps.cohort_tests(dataset2_per_class)
    audited = steps.audit(AuditConfig(retrain=audit_retrain, n_bootstrap=n_bootstrap, seed=seed)) if audit else None
    # the fine-tunes have settings of their own (FINETUNE_PROFILES): only where and how to run carries over
    tuned = {k: v for k, v in overrides.items() if k in RUNTIME_SETTINGS}
    runs = steps.finetunes(tuned, dataset2, dataset2_per_class)
    results = steps.stage(
        "reports", lambda: {name: write_report(run, n_bootstrap=n_bootstrap, seed=seed) for name, run in runs.items()}
    )
    four = root.run(FOUR_CLASS.name)
    annotate_cards(four.path, results["4-class"])  # the per-source figures, where predict and serve see them
    serve = steps.final_model(results["4-class"]) if final else four.fold(1).model
    return write_overview(
        root.path, runs, results, profile, steps.timings, weights=config.weights, serve=serve, audit=audited
    )


def _read_timings(path: Path) -> dict[str, float]:
    """The seconds per stage of the earlier sittings (none when the file is missing or unreadable)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: float(v) for k, v in record.items() if isinstance(v, int | float)} if isinstance(record, dict) else {}


class _Steps:
    """The stages of one reproduction, each timed into ``timings.json``.

    A resumed reproduction adds each stage's seconds to those of the earlier sittings, so ``timings.json`` says
    where the whole run's time went, not only the last sitting's (which finds most stages done)."""

    def __init__(self, data: Path, root: ReproduceDir, profile: str, progress: bool):
        self.data, self.root, self.profile, self.progress = data, root, profile, progress
        self.four = root.run(FOUR_CLASS.name)
        self.earlier = _read_timings(root.timings)
        self.timings: dict[str, float] = dict(self.earlier)

    def stage(self, name: str, work):
        logger.info(f"== {name}")
        started = time.perf_counter()
        result = work()
        self.timings[name] = round(self.earlier.get(name, 0.0) + time.perf_counter() - started, 1)
        with atomic_path(self.root.timings) as tmp:
            tmp.write_text(json.dumps(self.timings, indent=2) + "\n")
        return result

    def cross_validate(self, config, record: dict) -> None:
        """The 4-class cross-validation (Tables III and IV)."""
        self.stage(
            "4class",
            lambda: run_cv(
                self.root.dataset.path,
                self.four.path,
                config,
                profile=self.profile,
                resume=True,
                progress=self.progress,
                record=record,
            ),
        )

    def cohort_tests(self, adult_per_class: int | None) -> None:
        """Each cohort the run did not train with tests its fold models (held out otherwise)."""
        for name in COHORTS:
            if _has_cohort(self.data, name):
                per_class = adult_per_class if name == ADULT.name else None
                self.stage(
                    f"{name}-test",
                    lambda name=name, per_class=per_class: cohort_test(
                        self.four.path, COHORTS[name], self.data, per_class=per_class
                    ),
                )

    def audit(self, config: AuditConfig) -> AuditResults:
        """The shortcut audit of the 4-class run (kept when done), its headline written into the fold cards."""
        done = self.four.audit.read_summary()
        if done is not None:
            audited = AuditResults.from_json(done)
        else:
            audited = self.stage("audit", lambda: run_audit(self.four.path, config=config, progress=self.progress))
        headline = audited.headline
        where = os.path.relpath(self.four.audit.markdown, self.root.path)
        for fold in self.four.folds():
            if headline and fold.has_model():
                annotate_card(fold.model, audit=f"{headline} (the run's audit: {where})")
        return audited

    def finetunes(self, tuned: dict, dataset2: bool, dataset2_per_class: int | None) -> dict[str, Path]:
        """The 3-class and binary fine-tunes (Table V), and dataset-2's (Table VI) where the data has it."""
        for task in FINETUNED_TASKS:
            self.stage(
                task,
                lambda task=task: finetune(
                    self.four.path,
                    self.root.run(task).path,
                    task=task,
                    profile=self.profile,
                    resume=True,
                    progress=self.progress,
                    **tuned,
                ),
            )
        runs = {get_task(task).title: self.root.run(task).path for task in (FOUR_CLASS.name, *FINETUNED_TASKS)}
        if dataset2 and _has_dataset2(self.data):
            dataset2_run = self.root.run(DATASET2)
            self.stage(
                DATASET2,
                lambda: finetune(
                    self.four.path,
                    dataset2_run.path,
                    task="3class",
                    profile=self.profile,
                    data=self.data,
                    data_per_class=dataset2_per_class,
                    resume=True,
                    progress=self.progress,
                    **tuned,
                ),
            )
            runs["dataset-2"] = dataset2_run.path
            runs["dataset-2, no overlap"] = dataset2_run.no_overlap.path
        elif dataset2:
            logger.info(f"dataset-2 not found under {self.data}: Table VI skipped")
        return runs

    def final_model(self, four: RunResults) -> Path:
        """One 4-class model on every image, its card carrying the recipe's cross-validated figures."""
        self.stage(
            "final",
            lambda: fit_final(
                self.four.path,
                self.root.final.path,
                validated_by=_validation(four),
                progress=self.progress,
            ),
        )
        serve = self.root.final.model
        recipe = "the cross-validation models of this recipe"
        annotate_card(  # the recipe's figures, measured over every fold (this model has no held-out films)
            serve, false_covid_by_source=source_card_entry(four, measured_on=recipe)
        )
        if four.adult:
            rate = four.adult.false_covid_all
            annotate_card(
                serve,
                adult_test={
                    "false_covid_rate": rate.value,
                    "ci": rate.ci,
                    "films": four.adult.n_images,
                    "patients": four.adult.n_patients,
                    "data": "dataset-2 adult ChestX-ray8 films, each predicted by the "
                    "cross-validation model that never trained on it",
                    "measured_on": recipe,
                },
            )
        return serve


def _validation(four: RunResults) -> dict:
    """What the 4-class cross-validation measured, for the final model's card (its JSON form)."""
    record = four.to_json()
    return {
        key: record[key]
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


__all__ = ["Overview", "overview_lines", "reproduce", "write_overview"]
