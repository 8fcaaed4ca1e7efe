"""A run trained without the BIMCV films tests them (``RUN/radiography-test/``) as a cohort of COVID-19 films: their
recall, not a false COVID-19 rate, and never a film the run trained on (synthetic data and a tiny network)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from coronet.data.cohorts import RADIOGRAPHY
from coronet.data.prepare import OTHER_SOURCE, PrepareConfig, prepare_dataset
from coronet.evaluation.cohorttest import cohort_test
from coronet.evaluation.report import write_report
from coronet.training.fit import run_cv
from coronet.training.profiles import get_profile
from radiography_helpers import synthetic_data


@pytest.fixture(scope="module")
def tested(tmp_path_factory):
    base = tmp_path_factory.mktemp("radiography-test")
    data = synthetic_data(base / "data", kaggle=True)
    labels = ("covid", "normal", "bacterial", "viral")
    config = PrepareConfig(class_counts=dict.fromkeys(labels), folds=2, image_size=32, workers=1)
    prepare_dataset(data, base / "dataset", config)
    run = base / "run"
    run_cv(base / "dataset", run, get_profile("tiny").with_overrides(epochs=1), profile="tiny", progress=False)
    written = cohort_test(run, RADIOGRAPHY, data)
    return run, written, write_report(run, n_bootstrap=20)


def test_the_bimcv_films_are_tested_without_the_copies_of_training_films(tested):
    run, written, _ = tested
    assert written == run / "radiography-test" / "predictions.csv"
    predictions = pd.read_csv(written)
    numbers = sorted(int(Path(p).stem.split("-")[1]) for p in predictions.path)
    assert numbers == list(range(1894, 1906))  # COVID-1906 and 1907 repeat ieee8023 training films
    dropped = pd.read_csv(run / "radiography-test" / "duplicates.csv")
    assert set(dropped.kind) == {OTHER_SOURCE}
    assert sorted(Path(p).name for p in dropped.other_path) == ["COVID-1906.png", "COVID-1907.png"]
    for fold in (1, 2):
        entry = json.loads((run / f"fold-{fold}" / "model" / "model.json").read_text())["cohort_tests"]["radiography"]
        films = predictions[predictions.fold == fold]
        assert entry["covid_recall"] == pytest.approx((films.pred == "covid").mean()) and entry["films"] == len(films)
        assert entry["false_covid_rate"] is None and entry["trained_with_cohort"] is False


def test_the_report_gives_the_cohorts_covid_recall(tested):
    _, written, summary = tested
    predictions = pd.read_csv(written)
    cohort = summary.cohorts["radiography"]
    assert cohort.covid_recall.value == pytest.approx((predictions.pred == "covid").mean())
    assert "false_covid_all" not in cohort.figures and not cohort.trained_with
    page = (written.parent.parent / "report" / "report.md").read_text()
    assert "Cohort radiography: COVID-19 films from a second collection" in page
    assert "films none of the models saw in training; COVID-19 recall" in page
