"""Adult negatives: their folds, Table I-only tables, and the false COVID-19 rate (the partial-label loss:
tests/training/test_partial_labels.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from coronet.data.cohorts import ADULT, TABLE1
from coronet.data.prepare import PrepareConfig, prepare_dataset
from coronet.evaluation.report import write_report

pytestmark = pytest.mark.slow  # trains on the real data

CLASSES = ("covid", "normal", "bacterial", "viral")


@pytest.fixture(scope="module")
def adult_dataset(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("adult")
    config = PrepareConfig(
        image_size=32,
        class_counts={"covid": 20, "normal": 20, "bacterial": 20, "viral": 20},
        cohorts={ADULT.name: str(data_dir)},
        cohort_per_class={ADULT.name: 60},
    )
    prepare_dataset(data_dir, out, config)
    return out


def test_adult_rows_have_patient_grouped_folds_of_their_own(adult_dataset):
    manifest = pd.read_csv(adult_dataset / "manifest.csv")
    adults = manifest[manifest.cohort == ADULT.name]
    assert (manifest.cohort == TABLE1).sum() == 80 and len(adults) == 120
    assert set(adults.label) == {"normal", "pneumonia"} and set(adults.source) == {"ozturk"}
    assert adults.patient_id.str.fullmatch(r"ozturk:\d{8}").all()  # the ChestX-ray8 patient: 8 digits
    assert adults.groupby("patient_id").fold.nunique().max() == 1  # no patient in two folds
    assert sorted(adults.fold.unique()) == [1, 2, 3, 4]
    assert len(np.load(adult_dataset / "images-32.npy", mmap_mode="r")) == len(manifest)
    assert "normal (adult) | ozturk" in (adult_dataset / "summary.md").read_text()


def test_a_tiny_run_with_adult_negatives_trains_and_reports_them_apart(adult_dataset, tmp_path):
    from dataclasses import replace

    from coronet.training.fit import fit_fold
    from coronet.training.profiles import get_profile

    result = fit_fold(adult_dataset, 1, tmp_path, replace(get_profile("tiny"), train_per_class=None), progress=False)
    predictions = pd.read_csv(tmp_path / "predictions.csv")
    manifest = pd.read_csv(adult_dataset / "manifest.csv")
    assert sorted(predictions.path) == sorted(manifest[manifest.fold == 1].path)
    assert set(predictions[predictions.cohort == ADULT.name].label) == {"normal", "pneumonia"}
    table1 = predictions[predictions.cohort == TABLE1]
    assert result.accuracy == pytest.approx((table1.pred == table1.label).mean())
    card = json.loads((tmp_path / "model" / "model.json").read_text())
    assert card["training"]["adult_negatives"] == int(((manifest.fold != 1) & (manifest.cohort == ADULT.name)).sum())


def synthetic_run(tmp_path, with_adults: bool):
    """A run directory whose predictions are known: 8 Table I films (2 wrong), and 10 adult films."""
    rows = []
    for k, (label, pred) in enumerate(
        [
            ("covid", "covid"),
            ("covid", "covid"),
            ("normal", "normal"),
            ("normal", "covid"),
            ("bacterial", "bacterial"),
            ("bacterial", "viral"),
            ("viral", "viral"),
            ("viral", "viral"),
        ]
    ):
        rows.append(
            {
                "path": f"t{k}.png",
                "patient_id": f"p{k}",
                "fold": 1 + k % 2,
                "label": label,
                "pred": pred,
                "cohort": TABLE1,
            }
        )
    adult_calls = [
        "covid",
        "normal",
        "normal",
        "normal",
        "normal",  # 1 of 5 normal films called COVID
        "covid",
        "covid",
        "bacterial",
        "viral",
        "normal",
    ]  # 2 of 5 pneumonia films
    for k, pred in enumerate(adult_calls):
        rows.append(
            {
                "path": f"a{k}.png",
                "patient_id": f"ozturk:{k:08d}",
                "fold": 1 + k % 2,
                "label": "normal" if k < 5 else "pneumonia",
                "pred": pred,
                "cohort": ADULT.name,
            }
        )
    table = pd.DataFrame(rows)
    for c in CLASSES:
        table[f"prob_{c}"] = (table.pred == c).astype(float) * 0.7 + 0.075
    run = tmp_path / ("with" if with_adults else "without")
    run.mkdir()
    (table if with_adults else table[table.cohort == TABLE1]).to_csv(run / "predictions.csv", index=False)
    return run


def test_table3_is_the_same_with_and_without_adult_rows(tmp_path):
    with_adults, without = synthetic_run(tmp_path, True), synthetic_run(tmp_path, False)
    a = write_report(with_adults, n_bootstrap=20)
    b = write_report(without, n_bootstrap=20)
    pd.testing.assert_frame_equal(
        pd.read_csv(with_adults / "report" / "table3.csv"), pd.read_csv(without / "report" / "table3.csv")
    )
    assert a.accuracy.value == b.accuracy.value == 6 / 8 and a.n_images == 8
    assert b.adult is None


def test_false_covid_rates_are_counted_on_the_right_rows(tmp_path):
    summary = write_report(synthetic_run(tmp_path, True), n_bootstrap=50)
    adult = summary.adult
    assert adult.figures["false_covid_normal"].value == pytest.approx(1 / 5)
    assert adult.figures["false_covid_pneumonia"].value == pytest.approx(2 / 5)
    assert adult.false_covid_all.value == pytest.approx(3 / 10) and adult.n_images == 10
    # normal vs pneumonia: normal films called normal (4) and pneumonia films called bacterial/viral (2), of 10
    assert adult.label_accuracy.value == pytest.approx(6 / 10)
    assert adult.trained_with
    # Table I's own false-COVID rate: 1 of 2 normal films, none of the pneumonia films
    assert summary.false_covid["normal"]["rate"] == pytest.approx(0.5)
    assert summary.false_covid["bacterial"]["rate"] == 0.0
    low, high = adult.false_covid_all.ci
    assert 0 <= low <= 0.3 <= high <= 1
    page = (tmp_path / "with" / "report" / "report.html").read_text()
    assert "Cohort adult: adult films without COVID-19" in page and "False COVID-19 rate" in page
