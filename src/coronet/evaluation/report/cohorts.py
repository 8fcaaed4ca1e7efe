"""The report's extra cohorts (:mod:`coronet.data.cohorts`): their films, figures, tables and sections.

Each cohort's films of a run, its figures with 95 % intervals over its patients, its table
(``<cohort>-false-covid.csv``) and its section."""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import pandas as pd

from ...data.cohorts import COHORTS, extra_rows
from ...layout import ReportDir, RunDir
from ..bootstrap import bootstrap_cis
from ..metrics import COVID, false_covid_rate_of, recall_of
from ..results import CohortResult, Estimate
from ..sources import allowed_predictions, called_covid, source_table
from .sourcetable import source_display
from .tables import false_covid_table


def cohort_predictions(run_dir: str | os.PathLike, predictions: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Each extra cohort's predictions for a run: its own rows of that cohort, else its cohort test's file."""
    run = RunDir(run_dir)
    if predictions is None:
        predictions = pd.read_csv(run.predictions)
    found = extra_rows(predictions)
    for cohort in COHORTS.values():
        path = run.cohort_test(cohort.test_dir)
        if cohort.name not in found and path.is_file():
            found[cohort.name] = pd.read_csv(path)
    return found


def cohort_results(cohorts, classes, trained_with, n_bootstrap: int, seed: int, out: ReportDir):
    """Each extra cohort's figures and its false-COVID table (``<cohort>-false-covid.csv``)."""
    results: dict[str, CohortResult] = {}
    tables: dict[str, pd.DataFrame] = {}
    for name, rows in cohorts.items():
        title = COHORTS[name].title if name in COHORTS else name
        results[name] = cohort_summary(
            rows, classes, n=n_bootstrap, seed=seed, trained_with=name in trained_with, title=title
        )
        table = false_covid_table(rows, n=n_bootstrap, seed=seed)
        if table is not None or not (rows["label"] == COVID).any():
            tables[name] = table if table is not None else pd.DataFrame()
            tables[name].to_csv(out.table(f"{name}-false-covid"))
        else:  # a cohort of COVID-19 films: its recall and AUC, as the per-source table gives them
            tables[name] = source_display(source_table(rows, n=n_bootstrap, seed=seed))
    return results, tables


def cohort_summary(
    rows: pd.DataFrame, classes, n: int = 1000, seed: int = 0, trained_with: bool = False, title: str = ""
) -> CohortResult:
    """An extra cohort's figures: for its films without COVID-19 the false COVID-19 rate per label and over all,
    for its COVID-19 films (``radiography``) ``covid_recall``, and ``label_accuracy`` (each film's answer right
    for its own label, a partial label's classes counting), each with a 95 % interval over the cohort's
    patients."""
    negatives = sorted(set(rows["label"]) - {COVID})
    stats: dict[str, Callable[[pd.DataFrame], float]] = {
        f"false_covid_{label}": false_covid_rate_of(label) for label in negatives
    }
    if negatives:
        stats["false_covid_all"] = lambda df: called_covid(df[df["label"] != COVID])
    if (rows["label"] == COVID).any():
        stats["covid_recall"] = recall_of(COVID)
    right = {label: allowed_predictions(label, classes) for label in set(rows["label"])}
    stats["label_accuracy"] = lambda df: (
        float(np.mean([p in right[label] for label, p in zip(df["label"], df["pred"])])) if len(df) else float("nan")
    )
    cis = bootstrap_cis(rows, stats, n=n, seed=seed)
    return CohortResult(
        n_images=int(len(rows)),
        n_patients=int(rows["patient_id"].nunique()),
        figures={name: Estimate.of(triple) for name, triple in cis.items()},
        counts={label: int((rows["label"] == label).sum()) for label in sorted(set(rows["label"]))},
        trained_with=trained_with,
        title=title,
    )


def cohort_sections(results: dict[str, CohortResult], tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Each cohort's table under its title: how its films were tested, what is measured, its own-label accuracy."""
    sections = {}
    for name, cohort in results.items():
        how = (
            "held-out films of each fold (the models trained on the other folds' films of this cohort)"
            if cohort.trained_with
            else "films none of the models saw in training"
        )
        right = cohort.label_accuracy
        what = "COVID-19 recall" if cohort.covid_recall else "false COVID-19 rate"
        sections[
            f"Cohort {name}: {cohort.title}; {how}; {what} "
            f"(own-label accuracy {right.value:.3f}, 95% CI {right.low:.3f}-{right.high:.3f})"
        ] = tables[name]
    return sections
