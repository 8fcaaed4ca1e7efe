"""The extra cohorts as a test: how a cross-validation's fold models do on films they never trained on.

An extra cohort (:mod:`coronet.data.cohorts`) holds films that break a shortcut of the paper's
data: dataset-2's adult ChestX-ray8 films (``adult``: "adult" alone predicts COVID-19 there), and
films without COVID-19 from the positives' own collections (``source``: "ieee8023's look" does).
Each film gets a fold (patient-grouped: the assignment ``coronet data prepare --<name>-negatives``
gives with the run's seed and fold count) and is predicted by that fold's model only. A run
trained with the cohort already holds these predictions (its validation rows of that cohort:
never trained on by their fold's model); any other run gets them here, in
``RUN/<cohort.test_dir>/predictions.csv``, which the run's report reads. A cohort's film that is the
same film as one of the run's dataset (a training film of another source) is left out and listed in
``RUN/<cohort.test_dir>/duplicates.csv``. ``radiography`` is a cohort of COVID-19 films: its figure is
its recall, not a false COVID-19 rate.

:func:`leave_out_test` does the same for the collection a run left out (``coronet cv --leave-out
SOURCE``): each of its films, which no fold trained or validated on, is predicted by the model of its
own fold, into ``RUN/leave-out/predictions.csv``.

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
from ..data.leaveout import held_out
from ..data.overlap import dataset_fingerprints
from ..data.prepare import PrepareConfig, cache_size, cohort_rows, load_cache
from ..layout import RunDir, atomic_path, predictions_table
from ..models.modeldir import annotate_card, load_model_dir, read_card
from .audit import predict_images
from .metrics import COVID
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
    if cohort.name in extra_rows(run.read_manifest()):  # in the run's data: cross-validated, or left out whole
        own = extra_rows(pd.read_csv(run.predictions)).get(cohort.name)
        for fold, rows in own.groupby("fold") if own is not None else ():
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
    seen = dataset_fingerprints(run.dataset.path)  # the run's films: the test must not hold one of them again
    rows, scans, duplicates, _ = cohort_rows(cohort, Path(data), Path(data), config, seen=seen)
    written.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(duplicates, columns=["kind", "path", "other_path", "distance", "correlation", "kept"]).to_csv(
        written.parent / "duplicates.csv", index=False
    )
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
    predictions = pd.concat(parts, ignore_index=True)
    with atomic_path(written) as tmp:
        predictions.to_csv(tmp, index=False)
    return written


def leave_out_test(run_dir: str | os.PathLike, batch_size: int = 32) -> Path | None:
    """Predict the films of the collection a cross-validation left out (its ``leave_out`` setting), each with the
    model of its own fold; write ``RUN/leave-out/predictions.csv`` and return it (None: the run left none out).

    The films come from the run's dataset (its image cache); folds without a model (a run of ``--folds 1``)
    leave their films unpredicted, which the log says. Each fold card records what its films scored.
    """
    run = RunDir(run_dir)
    record = run.read_config()
    source = (record.get("train") or {}).get("leave_out")
    if not source:
        return None
    manifest = run.read_manifest()
    rows = manifest[held_out(manifest, source)]
    folds = [int(f) for f in record["folds"] if run.fold(int(f)).has_model()]
    if not folds:
        raise FileNotFoundError(f"{run.path}: no fold has a trained model to test the held-out {source} films")
    written = run.leave_out
    if written.is_file() and set(pd.read_csv(written)["fold"]) == set(rows["fold"]) & set(folds):
        return written
    dataset = run.dataset.path
    first_card = load_model_dir(run.fold(folds[0]).model)[1]
    cache = load_cache(dataset, cache_size(dataset, int(first_card["input_size"])))
    parts = []
    for fold in folds:
        chosen = rows[rows["fold"] == fold]
        if chosen.empty:
            continue
        films = np.asarray(cache[chosen["cache_index"].to_numpy()])
        probabilities, classes = predict_images(run.fold(fold).model, films, batch_size)
        table = predictions_table(chosen, probabilities, classes)
        parts.append(table)
        logger.info(f"leave-out test ({source}), fold {fold}: {len(chosen)} films no fold model trained on")
        annotate_card(run.fold(fold).model, leave_out_test={"source": source, **_figures(table)})
    predictions = pd.concat(parts, ignore_index=True)
    if len(predictions) < len(rows):
        logger.info(f"leave-out test ({source}): {len(predictions)} of its {len(rows)} films (folds {folds} only)")
    written.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(written) as tmp:
        predictions.to_csv(tmp, index=False)
    return written


def card_entry(rows: pd.DataFrame, cohort: Cohort, trained_with: bool) -> dict:
    """A fold card's record of one cohort: the share of its films without COVID-19 called COVID-19 (and the
    recall of its COVID-19 films, for a cohort that has them)."""
    return {
        **_figures(rows),
        "data": cohort.title,
        "never_trained_on": True,  # each fold model predicts only its own held-out films
        "trained_with_cohort": trained_with,
    }


def _figures(rows: pd.DataFrame) -> dict:
    """Films, patients, the false COVID-19 rate of the films without COVID-19 and the recall of those with it
    (each None where there are no such films)."""
    positive, called = rows["label"] == COVID, rows["pred"] == COVID
    return {
        "false_covid_rate": float(called[~positive].mean()) if (~positive).any() else None,
        "covid_recall": float(called[positive].mean()) if positive.any() else None,
        "films": int(len(rows)),
        "patients": int(rows["patient_id"].nunique()),
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


__all__ = ["annotate_cards", "card_entry", "cohort_test", "leave_out_test", "source_card_entry"]
