"""The per-source table: each (source, label) of the evaluated films, the share called COVID-19, the recall of its
own label, and the worst negative source -- on a synthetic run whose answers are known."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from coronet.evaluation.report import write_report
from coronet.evaluation.sources import negative_sources, source_table, worst_false_covid

CLASSES = ("covid", "normal", "bacterial", "viral")


def known_predictions() -> pd.DataFrame:
    """(source, label, cohort, predictions): counts chosen so every figure below is a simple fraction."""
    groups = [
        ("cohen", "covid", "table1", ["covid"] * 9 + ["normal"]),  # recall 0.9
        ("kaggle", "normal", "table1", ["normal"] * 10),  # never COVID
        ("kaggle", "viral", "table1", ["viral"] * 6 + ["bacterial"] * 4),  # recall 0.6
        ("ozturk", "pneumonia", "adult", ["covid"] * 2 + ["bacterial"] * 3 + ["viral"] * 3 + ["normal"] * 2),
        ("cohen", "bacterial", "source", ["covid"] * 3 + ["bacterial"]),  # 3 of 4 called COVID
        ("cohen", "other", "source", ["covid", "normal", "viral", "bacterial"]),  # "not COVID": 3 of 4 right
        ("actualmed", "normal", "source", ["normal"] * 4 + ["covid"]),  # 1 of 5
    ]
    rows = []
    for source, label, cohort, preds in groups:
        for k, pred in enumerate(preds):
            rows.append(
                {
                    "path": f"{source}-{label}-{k}.png",
                    "patient_id": f"{source}:{label}:{k}",
                    "fold": 1 + k % 2,
                    "label": label,
                    "pred": pred,
                    "source": source,
                    "cohort": cohort,
                    **{f"prob_{c}": 0.7 if c == pred else 0.1 for c in CLASSES},
                }
            )
    return pd.DataFrame(rows)


def test_source_table_counts_each_source_and_label_on_its_own_films():
    table = source_table(known_predictions(), n=50).set_index(["source", "label"])
    assert table.loc[("cohen", "covid"), "called covid"] == pytest.approx(0.9)
    assert table.loc[("cohen", "covid"), "recall"] == pytest.approx(0.9)
    assert table.loc[("kaggle", "normal"), "called covid"] == 0.0
    assert table.loc[("kaggle", "viral"), "recall"] == pytest.approx(0.6)
    # partial labels: pneumonia is right as bacterial or viral, other ("not COVID-19") as anything but COVID-19
    assert table.loc[("ozturk", "pneumonia"), "recall"] == pytest.approx(0.6)
    assert table.loc[("ozturk", "pneumonia"), "called covid"] == pytest.approx(0.2)
    assert table.loc[("cohen", "other"), "recall"] == pytest.approx(0.75)
    assert table.loc[("cohen", "bacterial"), "called covid"] == pytest.approx(0.75)
    assert table.loc[("actualmed", "normal"), "images"] == 5 and table.loc[("actualmed", "normal"), "patients"] == 5
    assert table.loc[("cohen", "other"), "cohort"] == "source"
    low, high = table.loc[("kaggle", "viral"), ["recall low", "recall high"]]
    assert 0 <= low <= 0.6 <= high <= 1 and low < high


def test_the_worst_negative_source_is_the_collection_most_often_called_covid():
    negatives = negative_sources(known_predictions(), n=50).set_index("source")
    # ieee8023's negatives: bacterial 3 of 4 and other 1 of 4 called COVID-19 -> 4 of 8
    assert negatives.loc["cohen", "false covid"] == pytest.approx(0.5) and negatives.loc["cohen", "images"] == 8
    assert negatives.loc["ozturk", "false covid"] == pytest.approx(0.2)
    assert negatives.loc["actualmed", "false covid"] == pytest.approx(0.2)
    assert negatives.loc["kaggle", "false covid"] == 0.0  # normal and viral films of Table I
    worst = worst_false_covid(negatives.reset_index())
    assert worst.source == "cohen" and worst.rate.value == pytest.approx(0.5) and worst.images == 8


def test_every_report_carries_the_source_table_and_its_headline(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    known_predictions().to_csv(run / "predictions.csv", index=False)
    summary = write_report(run, n_bootstrap=30)
    assert summary.worst.source == "cohen"
    assert summary.accuracy.value == pytest.approx((9 + 10 + 6) / 30)  # Table I rows only
    saved = json.loads((run / "report" / "summary.json").read_text())
    assert saved["sources"]["worst_false_covid"]["rate"] == pytest.approx(0.5)
    table = pd.read_csv(run / "report" / "sources.csv")
    assert len(table) == 7 and set(table.source) == {"cohen", "kaggle", "ozturk", "actualmed"}
    page = (run / "report" / "report.html").read_text()
    assert "worst false-COVID rate over negative sources 50.0% (cohen" in page
    assert set(summary.cohorts) == {"adult", "source"}
    assert summary.cohorts["source"].false_covid_all.value == pytest.approx(5 / 13)
    assert saved["cohorts"]["source"]["false_covid_all"] == pytest.approx(5 / 13)
