"""`coronet reproduce --profile quick` end to end on a tiny subset of the real data (CoroNet at 150 px)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from coronet.cli import app

pytestmark = pytest.mark.slow  # trains on the real data


def test_reproduce_quick_on_a_tiny_subset(data_dir, tmp_path):
    out = tmp_path / "reproduce"
    args = [
        "reproduce",
        "--profile",
        "quick",
        "--data",
        str(data_dir),
        "--out",
        str(out),
        "--folds",
        "2",
        "--dataset2-per-class",
        "4",
        "--bootstrap",
        "50",
        "--final",
        "--no-progress",
    ]
    for label in ("covid", "normal", "bacterial", "viral"):
        args += ["--count", f"{label}=5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    for stage in ("4class", "3class", "binary", "dataset2", "dataset2/no-overlap"):
        assert (out / stage / "report" / "report.html").is_file(), stage
    assert json.loads((out / "4class" / "config.json").read_text())["train"]["backbone"] == "legacy_xception"
    assert json.loads((out / "binary" / "config.json").read_text())["task"] == "binary"
    assert set(pd.read_csv(out / "binary" / "predictions.csv").label) == {"covid", "normal"}
    assert set(pd.read_csv(out / "3class" / "predictions.csv").label) == {"covid", "normal", "pneumonia"}
    assert len(pd.read_csv(out / "dataset2" / "predictions.csv")) == 12

    table5 = pd.read_csv(out / "table5.csv", index_col=0)
    assert list(table5.index) == ["4-class", "3-class", "binary"]
    assert list(table5.accuracy_paper) == [89.6, 95.0, 99.0]
    table6 = pd.read_csv(out / "table6.csv", index_col=0)
    assert table6.loc["dataset-2: accuracy", "accuracy_paper"] == 90.21
    assert "dataset-2, no overlap: covid" in table6.index
    page = (out / "report.html").read_text()
    for name in ("Table III", "Table IV", "Table V", "Table VI", "not a medical device"):
        assert name in page
    timings = json.loads((out / "timings.json").read_text())
    assert {"prepare", "4class", "3class", "binary", "dataset2", "reports"} <= set(timings)

    lines = result.output.strip().splitlines()
    report = next(k for k, line in enumerate(lines) if line.startswith("report: "))
    assert lines[report].endswith("report.html") and lines[report - 1].startswith("PIPELINE CHECK, NOT A RESULT")
    assert lines[report + 1].startswith("4-class: accuracy ") and "95% CI" in lines[report + 1]
    assert lines[-1].startswith(f"model to use: coronet serve --model {(out / 'final' / 'model').resolve()} (")
    assert "worst false-COVID rate over negative sources" in lines[-1]
    assert "Pipeline check, not a result" in page
    card = json.loads((out / "final" / "model" / "model.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert card["training"]["train_images"] == 20 and card["metrics"]["val_accuracy"] is None
    assert card["validated_by"]["accuracy"] == summary["runs"]["4-class"]["accuracy"]
    assert summary["initial_weights"] == "none" and summary["pipeline_check"]

    # run again: every stage is found finished and kept (resume), the overview is rebuilt
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "already finished, kept" in again.output
    # timings.json adds the second sitting's seconds to the first's: a resumed run still says where its time went
    both = json.loads((out / "timings.json").read_text())
    assert set(both) == set(timings) and all(both[stage] >= timings[stage] for stage in timings)
    assert both["reports"] > timings["reports"]  # the overview and reports are rebuilt, so they took time again


def test_reproduce_deconfound_trains_with_both_cohorts_and_reports_by_source(data_dir, tmp_path):
    from coronet.training.profiles import DECONFOUND

    out = tmp_path / "deconfound"
    args = ["reproduce", "--profile", "quick", "--data", str(data_dir), "--out", str(out), "--folds", "2"]
    args += ["--deconfound", "--adult-per-class", "6", "--no-audit", "--no-dataset2", "--bootstrap", "20"]
    args += ["--no-progress", "--epochs", "1"]
    for label in ("covid", "normal", "bacterial", "viral"):
        args += ["--count", f"{label}=5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    manifest = pd.read_csv(out / "dataset" / "manifest.csv")
    assert set(manifest.cohort) == {"table1", "adult", "source"}
    train = json.loads((out / "4class" / "config.json").read_text())["train"]
    assert all(train[key] == value for key, value in DECONFOUND.items())
    summary = json.loads((out / "summary.json").read_text())
    worst = summary["runs"]["4-class"]["sources"]["worst_false_covid"]
    assert worst is not None and worst["source"] in {"kaggle", "ozturk", "cohen", "actualmed"}
    sources = pd.read_csv(out / "4class" / "report" / "sources.csv")
    assert {"ozturk", "cohen", "actualmed", "kaggle"} <= set(sources.source)
    card = json.loads((out / "4class" / "fold-1" / "model" / "model.json").read_text())
    assert card["false_covid_by_source"]["worst"] == worst
    assert card["preprocess"]["equalize"] == DECONFOUND.get("equalize", False)
    assert set(card["cohort_tests"]) == {"adult", "source"} and card["training"]["extra_cohorts"]["source"] > 0
    assert "worst false-COVID rate over negative sources" in result.output
