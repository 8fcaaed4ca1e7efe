"""`coronet reproduce --radiography --leave-out radiography` end to end on synthetic data with the tiny network: the
BIMCV films join the dataset, no stage trains on them, the 4-class fold models test them, the overview shows them."""

from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from coronet.cli import app
from radiography_helpers import synthetic_data, with_negatives


def test_reproduce_with_the_bimcv_films_held_out(tmp_path):
    data = synthetic_data(tmp_path / "data", kaggle=True)
    out = tmp_path / "reproduce"
    args = ["reproduce", "--profile", "tiny", "--data", str(data), "--out", str(out), "--folds", "2", "--epochs", "1"]
    args += ["--radiography", "--leave-out", "radiography", "--no-audit", "--no-dataset2", "--bootstrap", "20"]
    args += ["--no-progress", *[f"--count={label}=6" for label in ("covid", "normal", "bacterial", "viral")]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output

    manifest = pd.read_csv(out / "dataset" / "manifest.csv")
    bimcv = manifest[manifest.source == "radiography"]
    assert len(bimcv) == 12 and set(bimcv.cohort) == {"radiography"}  # the two ieee8023 copies dropped
    held = pd.read_csv(out / "4class" / "leave-out" / "predictions.csv")
    assert sorted(held.path) == sorted(bimcv.path)
    for stage in ("4class", "3class", "binary"):
        assert json.loads((out / stage / "config.json").read_text())["train"]["leave_out"] == "radiography", stage
        assert not set(pd.read_csv(out / stage / "predictions.csv").path) & set(bimcv.path), stage
        card = json.loads((out / stage / "fold-1" / "model" / "model.json").read_text())
        assert card["training"]["extra_cohorts"].get("radiography", 0) == 0, stage
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"]["4-class"]["leave_out"]["n_images"] == 12
    assert "leave-out" in json.loads((out / "timings.json").read_text())
    assert "Held-out collection radiography" in (out / "report.md").read_text()
    assert "4-class: held-out collection radiography (12 films no model trained on): COVID-19 recall" in result.output


def test_a_bimcv_count_without_the_bimcv_films_is_a_one_line_error(tmp_path):
    data = synthetic_data(tmp_path / "data", kaggle=True)
    args = ["reproduce", "--profile", "tiny", "--data", str(data), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, [*args, "--radiography-count", "5"])
    assert result.exit_code == 2 and "--radiography-count needs --radiography" in result.output
    assert not (tmp_path / "out").exists()


def test_deconfound_with_radiography_takes_the_bimcv_films_and_says_so(tmp_path):
    data = with_negatives(synthetic_data(tmp_path / "data", kaggle=True))
    out = tmp_path / "deconfound"
    args = ["reproduce", "--profile", "tiny", "--data", str(data), "--out", str(out), "--folds", "2", "--epochs", "1"]
    args += ["--deconfound", "--radiography", "--no-audit", "--no-dataset2", "--bootstrap", "20", "--no-progress"]
    args += ["--set", "batch_size=64"]  # one batch: a last batch of one film would stop BatchNorm
    args += ["--radiography-count", "8", *[f"--count={label}=6" for label in ("covid", "normal", "bacterial", "viral")]]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "deconfound: adult and source negatives, the BIMCV COVID-19 films of radiography/ (8 drawn" in result.output
    manifest = pd.read_csv(out / "dataset" / "manifest.csv")
    assert set(manifest.cohort) == {"table1", "adult", "source", "radiography"}
    assert 6 <= (manifest.cohort == "radiography").sum() <= 8  # 8 drawn, any copy of an ieee8023 film dropped
    assert json.loads((out / "4class" / "config.json").read_text())["radiography"] is True
    card = json.loads((out / "4class" / "fold-1" / "model" / "model.json").read_text())
    assert card["training"]["extra_cohorts"]["radiography"] > 0


def test_deconfound_leaves_the_bimcv_films_out_unless_asked_and_then_draws_table_one_s_share():
    from coronet.reproduce.stages import ReproduceOptions, _deconfounded
    from coronet.training.profiles import DECONFOUND_RADIOGRAPHY_COUNT

    chosen, overrides = _deconfounded(ReproduceOptions(profile="tiny"), {})
    assert chosen.adult_negatives and chosen.source_negatives and overrides["source_balance"] == 0.5
    assert not chosen.radiography and chosen.radiography_count is None  # whatever the data holds
    chosen, _ = _deconfounded(ReproduceOptions(profile="tiny", radiography=True), {})
    assert chosen.radiography and chosen.radiography_count == DECONFOUND_RADIOGRAPHY_COUNT == 311
    chosen, _ = _deconfounded(ReproduceOptions(profile="tiny", radiography=True, radiography_count=8), {})
    assert chosen.radiography_count == 8
