"""The stages of ``coronet reproduce`` in order, each timed and kept when done: prepare, the 4-class
cross-validation, the cohort tests, the audit, the fine-tunes, the reports, the final model; then the overview
(:mod:`.overview`)."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..data.cohorts import ADULT, COHORTS, RADIOGRAPHY, SOURCE, Cohort
from ..data.prepare import PAPER_CLASS_COUNTS, PrepareConfig, prepare_dataset
from ..data.sources import find_source_root
from ..evaluation.audit import AuditConfig
from ..evaluation.audit import audit as run_audit
from ..evaluation.cohorttest import annotate_cards, cohort_test, leave_out_test, source_card_entry
from ..evaluation.report import write_report
from ..evaluation.results import AuditResults, RunResults
from ..layout import ReproduceDir, atomic_path
from ..models.modeldir import annotate_card
from ..tasks import FOUR_CLASS, get_task
from ..training.finetune import finetune, ozturk_root
from ..training.fit import check_training_config, fit_final, run_cv
from ..training.profiles import (
    DECONFOUND,
    DECONFOUND_RADIOGRAPHY_COUNT,
    FINETUNE_PROFILES,
    RUNTIME_FIELDS,
    TrainConfig,
    get_profile,
)
from .overview import Overview, write_overview

logger = logging.getLogger(__name__)

FINETUNED_TASKS = ("3class", "binary")
DATASET2 = "dataset2"
RUNTIME_SETTINGS = RUNTIME_FIELDS


@dataclass(frozen=True)
class ReproduceOptions:
    """What a reproduction runs, the training settings apart (``coronet reproduce``'s options of these names)."""

    #: the settings of every stage (``coronet.training.profiles``): fast, paper, quick, tiny ...
    profile: str = "fast"
    #: images per class for the 4-class dataset (default: the paper's Table I)
    counts: dict[str, int | None] | None = None
    folds: int = 4
    #: the seed of the selection, the folds, the audit and the bootstrap (training keeps the profile's)
    seed: int = 0
    #: include the dataset-2 stage when the data directory holds dataset-2
    dataset2: bool = True
    #: a seeded sample of dataset-2 per class (smoke runs); default all
    dataset2_per_class: int | None = None
    #: bootstrap resamples (over patients) for the intervals
    n_bootstrap: int = 1000
    #: one progress bar (with an ETA) over each training stage
    progress: bool = False
    #: also train one model on every image (``out/final/model``) for deployment
    final: bool = False
    #: train with dataset-2's adult ChestX-ray8 films as extra rows (de-confounding; ``coronet data prepare
    #: --adult-negatives``), ``adult_per_class`` of each (default all)
    adult_negatives: bool = False
    adult_per_class: int | None = None
    #: train with the films without COVID-19 of the positives' own collections (``source-negatives/``,
    #: ``coronet data prepare --source-negatives``)
    source_negatives: bool = False
    #: the model to use: adult and source negatives, the BIMCV films where ``radiography/`` is there, and the
    #: training settings :data:`coronet.training.profiles.DECONFOUND` (docs/RECIPES.md) under the caller's
    deconfound: bool = False
    #: run the shortcut audit (``coronet audit``) on the 4-class run; ``audit_retrain``: with its test 6 (a model
    #: retrained on lungs-removed films, one fold)
    audit: bool = True
    audit_retrain: bool = True
    #: train with the BIMCV-COVID19+ films of the COVID-19 Radiography Database (``radiography/``, ``coronet data
    #: prepare --radiography``), a seeded ``radiography_count`` of them (default all)
    radiography: bool = False
    radiography_count: int | None = None

    @property
    def cohorts(self) -> list[Cohort]:
        """The extra cohorts the 4-class models train with."""
        wanted = ((ADULT, self.adult_negatives), (SOURCE, self.source_negatives), (RADIOGRAPHY, self.radiography))
        return [cohort for cohort, chosen in wanted if chosen]


def reproduce(
    data: str | os.PathLike, out: str | os.PathLike, options: ReproduceOptions | None = None, **overrides
) -> Overview:
    """Run every stage (see :mod:`coronet.reproduce`) with ``options``; return what the overview reports.

    overrides: training settings replacing the profile's in every stage (``epochs=1`` ...). A ``leave_out``
        setting trains every stage without that source's films; the 4-class run's fold models then test them
        (``4class/leave-out/``).
    """
    options = options or ReproduceOptions()
    data, root = Path(data), ReproduceDir(out)
    if options.deconfound:
        options, overrides = _deconfounded(options, overrides)
    config = _checked_config(options, overrides, data)
    root.path.mkdir(parents=True, exist_ok=True)
    steps = _Steps(data, root, options.profile, options.progress)
    if not root.dataset.exists():
        prepare = _prepare_config(options, config, data)
        steps.stage("prepare", lambda: prepare_dataset(data, root.dataset.path, prepare))
    cohorts = {"adult_negatives": options.adult_negatives, "source_negatives": options.source_negatives}
    steps.cross_validate(config, {**cohorts, "deconfound": options.deconfound, "radiography": options.radiography})
    if config.leave_out:
        steps.stage("leave-out", lambda: leave_out_test(steps.four.path))
    steps.cohort_tests(options.dataset2_per_class)
    audit = AuditConfig(retrain=options.audit_retrain, n_bootstrap=options.n_bootstrap, seed=options.seed)
    audited = steps.audit(audit) if options.audit else None
    # the fine-tunes have settings of their own (FINETUNE_PROFILES): only where and how to run carries over
    tuned = {k: v for k, v in overrides.items() if k in RUNTIME_SETTINGS}
    runs = steps.finetunes(tuned, options.dataset2, options.dataset2_per_class)
    results = steps.stage(
        "reports",
        lambda: {
            name: write_report(run, n_bootstrap=options.n_bootstrap, seed=options.seed) for name, run in runs.items()
        },
    )
    four = root.run(FOUR_CLASS.name)
    annotate_cards(four.path, results["4-class"])  # the per-source figures, where predict and serve see them
    serve = steps.final_model(results["4-class"]) if options.final else four.fold(1).model
    return write_overview(
        root.path, runs, results, options.profile, steps.timings, weights=config.weights, serve=serve, audit=audited
    )


def _deconfounded(options: ReproduceOptions, overrides: dict) -> tuple[ReproduceOptions, dict]:
    """``--deconfound``: adult and source negatives, with ``--radiography`` a Table I share of BIMCV films, and the
    training settings :data:`DECONFOUND` under the given ``overrides``."""
    count = options.radiography_count
    if not options.radiography:  # 4 folds measured them raising every negative source's false-COVID rate (RECIPES.md)
        bimcv = "no BIMCV films (--radiography adds them)"
    else:
        count = DECONFOUND_RADIOGRAPHY_COUNT if count is None else count
        bimcv = f"the BIMCV COVID-19 films of radiography/ ({count} drawn; --radiography-count N for another number)"
    logger.info(f"deconfound: adult and source negatives, {bimcv}")
    chosen = replace(options, adult_negatives=True, source_negatives=True, radiography_count=count)
    return chosen, {**DECONFOUND, **overrides}


def _checked_config(options: ReproduceOptions, overrides: dict, data: Path) -> TrainConfig:
    """The 4-class run's training settings (the profile with ``overrides``), once the options are known to work:
    said in one line before anything is written (e.g. ImageNet weights offline, a cohort's folder missing)."""
    if options.radiography_count is not None and not options.radiography:
        raise ValueError(f"--radiography-count needs --radiography (or --deconfound with radiography/ under {data})")
    config = get_profile(options.profile).with_overrides(**overrides)
    if options.profile not in FINETUNE_PROFILES:
        raise ValueError(
            f"profile {options.profile!r} has no fine-tuning settings; choose from {sorted(FINETUNE_PROFILES)}"
        )
    check_training_config(config)
    for cohort in options.cohorts:
        if not _has_cohort(data, cohort.name):
            raise FileNotFoundError(f"{cohort.flag} needs {_folder(cohort.name)}/ under {data}")
    return config


def _prepare_config(options: ReproduceOptions, config: TrainConfig, data: Path) -> PrepareConfig:
    """The 4-class dataset's preparation: Table I (or ``options.counts``) and the chosen cohorts, at the input size
    of ``config``."""
    return PrepareConfig(
        class_counts=dict(options.counts or PAPER_CLASS_COUNTS),
        folds=options.folds,
        seed=options.seed,
        image_size=config.input_size,
        cohorts={cohort.name: str(data) for cohort in options.cohorts},
        cohort_per_class={ADULT.name: options.adult_per_class, RADIOGRAPHY.name: options.radiography_count},
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
