"""A held-out collection's figures on synthetic runs whose answers are known: the AUC of prob_covid of each
positive collection against ieee8023's films without COVID-19, the per-source table, and reproduce's overview."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from coronet.evaluation.report import write_report
from coronet.evaluation.sources import AUC, source_table
from coronet.reproduce import overview_lines, write_overview
from report_helpers import PAPER4, make_predictions

THREE = ["covid", "normal", "pneumonia"]


def with_sources(frame: pd.DataFrame, source: str, cohort: str, prefix: str) -> pd.DataFrame:
    return frame.assign(
        source=source,
        cohort=cohort,
        path=[f"{prefix}-{p}" for p in frame.path],
        patient_id=[f"{source}:{p}" for p in frame.patient_id],
    )


def four_class_run() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cross-validated rows, the held-out radiography films): ieee8023 COVID-19 and non-COVID films, Kermany
    negatives; 10 BIMCV COVID-19 films held out, 7 of them called COVID-19."""
    cohen = make_predictions(["covid"] * 8, ["covid"] * 6 + ["normal"] * 2, PAPER4, [1, 2] * 4)
    negatives = make_predictions(["bacterial"] * 6, ["covid"] * 2 + ["bacterial"] * 4, PAPER4, [1, 2] * 3)
    kaggle = make_predictions(
        ["normal"] * 6 + ["viral"] * 6, ["normal"] * 6 + ["viral"] * 4 + ["bacterial"] * 2, PAPER4, [1, 2] * 6
    )
    held = make_predictions(["covid"] * 10, ["covid"] * 7 + ["normal"] * 3, PAPER4, [1, 2] * 5, confidence=0.6)
    rows = pd.concat(
        [
            with_sources(cohen, "cohen", "table1", "c"),
            with_sources(negatives, "cohen", "source", "n"),
            with_sources(kaggle, "kaggle", "table1", "k"),
        ],
        ignore_index=True,
    )
    return rows, with_sources(held, "radiography", "radiography", "r")


def test_each_positive_collection_is_ranked_against_ieee8023s_films_without_covid():
    rows, held = four_class_run()
    table = source_table(pd.concat([rows, held.assign(held_out=True)], ignore_index=True), n=50)
    table = table.set_index(["source", "label"])
    reference = rows[(rows.source == "cohen") & (rows.label != "covid")]
    for source, films in (("cohen", rows[(rows.source == "cohen") & (rows.label == "covid")]), ("radiography", held)):
        both = pd.concat([films, reference])
        expected = roc_auc_score(both.label == "covid", both.prob_covid)
        assert table.loc[(source, "covid"), AUC] == pytest.approx(expected)
        low, high = table.loc[(source, "covid"), [f"{AUC} low", f"{AUC} high"]]
        assert low <= expected <= high
    assert pd.isna(table.loc[("kaggle", "normal"), AUC])  # only COVID-19 films are ranked
    assert table.loc[("radiography", "covid"), "held out"] and not table.loc[("cohen", "covid"), "held out"]
    assert table.loc[("radiography", "covid"), "called covid"] == pytest.approx(0.7)
    # without ieee8023 films without COVID-19 there is nothing to rank against
    assert pd.isna(source_table(held, n=20).loc[0, AUC])


def test_the_overview_shows_the_held_out_collection(tmp_path):
    rows, held = four_class_run()
    runs = {
        name: tmp_path / folder for name, folder in (("4-class", "4class"), ("3-class", "3class"), ("binary", "binary"))
    }
    for path in runs.values():
        path.mkdir()
    rows.to_csv(runs["4-class"] / "predictions.csv", index=False)
    (runs["4-class"] / "leave-out").mkdir()
    held.to_csv(runs["4-class"] / "leave-out" / "predictions.csv", index=False)
    labels3 = ["covid"] * 4 + ["normal"] * 4 + ["pneumonia"] * 4
    make_predictions(labels3, labels3, THREE, [1, 2] * 6).to_csv(runs["3-class"] / "predictions.csv", index=False)
    labels2 = ["covid"] * 4 + ["normal"] * 4
    make_predictions(labels2, labels2, ["covid", "normal"], [1, 2] * 4).to_csv(
        runs["binary"] / "predictions.csv", index=False
    )
    results = {name: write_report(path, n_bootstrap=30) for name, path in runs.items()}
    assert results["3-class"].leave_out is None

    overview = write_overview(tmp_path, runs, results, "fast", {"4class": 1.0})
    page = (tmp_path / "report.md").read_text()
    assert "Held-out collection radiography" in page
    section = page[page.index("Held-out collection radiography") :]
    assert "70.0%" in section  # 7 of the 10 BIMCV films called COVID-19
    saved = json.loads((tmp_path / "summary.json").read_text())["runs"]["4-class"]["leave_out"]
    assert saved["source"] == "radiography" and saved["n_images"] == 10
    assert saved["covid_recall"]["value"] == pytest.approx(0.7) and saved["false_covid"] is None
    assert saved["auc"]["value"] == pytest.approx(results["4-class"].leave_out.auc.value)
    line = next(line for line in overview_lines(overview) if "held-out collection" in line)
    assert line.startswith("4-class: held-out collection radiography (10 films no model trained on): ")
    assert "COVID-19 recall 0.700 (95% CI" in line and "AUC vs cohen non-covid" in line
