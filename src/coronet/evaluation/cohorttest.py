"""The extra cohorts as a test: how a cross-validation's fold models do on films they never trained on.

An extra cohort (:mod:`coronet.data.cohorts`) holds films that break a shortcut of the paper's
data: dataset-2's adult ChestX-ray8 films (``adult``: "adult" alone predicts COVID-19 there), and
films without COVID-19 from the positives' own collections (``source``: "ieee8023's look" does).
Each film gets a fold (patient-grouped: the assignment ``coronet data prepare --<name>-negatives``
gives with the run's seed and fold count) and is predicted by that fold's model only. A run
trained with the cohort already holds these predictions (its validation rows of that cohort:
never trained on by their fold's model); any other run gets them here, in
``RUN/<cohort.test_dir>/predictions.csv``, which the run's report reads.

:func:`annotate_cards` then writes the run's per-source figures (:mod:`coronet.evaluation.sources`)
into every fold model's card, where ``predict`` and ``serve`` find them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.cohorts import ADULT, Cohort, extra_rows
from ..data.prepare import PrepareConfig, cohort_rows
from ..layout import RunDir, atomic_path, predictions_table
from ..models.modeldir import annotate_card, load_model_dir, read_card
from .audit import predict_images
from .results import RunResults

logger = logging.getLogger(__name__)


def cohort_test(
    run_dir: str | os.PathLike,
    cohort: Cohort,
    data: str | os.PathLike,
    batch_size: int = 32,
    per_class: int | None = None,
) -> Path | None:
    """Predict ``cohort``'s films with the fold models of the 4-class ``run_dir``.

    Writes ``run_dir/<cohort.test_dir>/predictions.csv`` (the usual layout, ``cohort`` set) and returns
    it; returns None when the run's own predictions already hold the cohort's rows (a run trained
    with it). ``data`` is the cohort's source folder or a data directory holding it; ``per_class``:
    a seeded sample of that many films of each label (smoke runs).
    """
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    own = extra_rows(pd.read_csv(run.predictions)).get(cohort.name)
    if own is not None:  # trained with the cohort: each fold's held-out films are predicted already
        for fold, rows in own.groupby("fold"):
            _annotate_cohort(run_dir, int(fold), cohort, rows, trained_with=True)
        return None
    written = run.cohort_test(cohort.test_dir)
    if written.is_file():
        return written
    record = run.read_config()
    manifest = run.read_manifest()
    folds = sorted(int(f) for f in manifest.fold.unique())
    first_card = load_model_dir(run.fold(folds[0]).model)[1]
    config = PrepareConfig(
        folds=len(folds),
        seed=record["train"]["seed"],
        image_size=first_card["input_size"],
        cohort_per_class={cohort.name: per_class},
    )
    rows, scans, _, _ = cohort_rows(cohort, Path(data), Path(data), config)
    parts = []
    for fold in folds:
        chosen = np.flatnonzero(rows["fold"].to_numpy() == fold)
        films = np.stack([scans[k]["cached"] for k in chosen])
        probabilities, classes = predict_images(run.fold(fold).model, films, batch_size)
        table = predictions_table(rows.iloc[chosen], probabilities, classes)
        parts.append(table)
        logger.info(
            f"{cohort.name} test, fold {fold}: {len(chosen)} films, "
            f"{(table.pred == 'covid').mean():.1%} called COVID-19"
        )
        _annotate_cohort(run_dir, fold, cohort, table, trained_with=False)
    written.parent.mkdir(parents=True, exist_ok=True)
    predictions = pd.concat(parts, ignore_index=True)
    with atomic_path(written) as tmp:
        predictions.to_csv(tmp, index=False)
    return written


def card_entry(rows: pd.DataFrame, cohort: Cohort, trained_with: bool) -> dict:
    """A fold card's record of one cohort: the share of its films (none with COVID-19) called COVID-19."""
    return {
        "false_covid_rate": float((rows["pred"] == "covid").mean()),
        "films": int(len(rows)),
        "patients": int(rows["patient_id"].nunique()),
        "data": cohort.title,
        "never_trained_on": True,  # each fold model predicts only its own held-out films
        "trained_with_cohort": trained_with,
    }


def _annotate_cohort(run_dir: Path, fold: int, cohort: Cohort, rows: pd.DataFrame, trained_with: bool) -> None:
    entry = card_entry(rows, cohort, trained_with)
    model = RunDir(run_dir).fold(fold).model
    card, _ = read_card(model)
    fields: dict = {"cohort_tests": {**(card.get("cohort_tests") or {}), cohort.name: entry}}
    if cohort is ADULT:  # the name predict, serve and older cards know it by
        fields["adult_test"] = entry
    annotate_card(model, **fields)


def source_card_entry(results: RunResults, measured_on: str) -> dict:
    """A model card's ``false_covid_by_source``: the worst negative source and every negative source's rate."""
    sources = results.sources.to_json() if results.sources else {}
    return {
        "worst": sources.get("worst_false_covid"),
        "negative_sources": sources.get("negative_sources"),
        "measured_on": measured_on,
    }


def annotate_cards(run_dir: str | os.PathLike, results: RunResults) -> None:
    """Write a run's per-source figures (its report's ``sources``) into each fold model's card, as
    ``false_covid_by_source``: measured over every fold model, each on films it never trained on."""
    run_dir = Path(run_dir)
    entry = source_card_entry(
        results,
        measured_on=f"the {len(results.folds)} fold models of {run_dir.resolve()}, each on the films it never "
        "trained on",
    )
    for fold in results.folds:
        model = RunDir(run_dir).fold(fold).model
        if model.is_dir():
            annotate_card(model, false_covid_by_source=entry)


__all__ = ["annotate_cards", "card_entry", "cohort_test", "source_card_entry"]
