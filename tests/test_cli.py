"""The `coronet` command end to end on the real data: prepare, then a tiny cross-validation run."""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
from typer.testing import CliRunner

from coronet.cli import app
from conftest import write_xray

runner = CliRunner()


def invoke(*args, env=None):
    result = runner.invoke(app, [str(a) for a in args], env=env)
    return result


def test_prepare_then_cv_smoke(data_dir, tmp_path):
    dataset, run = tmp_path / "dataset", tmp_path / "run"
    result = invoke("data", "prepare", "--data", data_dir, "--out", dataset, "--image-size", 32)
    assert result.exit_code == 0, result.output
    assert "| covid | cohen | 423 | 284 | 284 |" in result.output
    manifest = pd.read_csv(dataset / "manifest.csv")
    assert {"path", "label", "source", "patient_id", "sha256", "fold"} <= set(manifest.columns)
    assert set(manifest.label) == {"covid", "normal", "bacterial", "viral"}

    result = invoke("cv", "--dataset", dataset, "--out", run, "--profile", "tiny", "--folds", "1,3", "--epochs", 1,
                    "--no-progress")
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(run / "predictions.csv")
    assert list(predictions.columns[:8]) == ["path", "patient_id", "fold", "label", "prob_covid", "prob_normal",
                                             "prob_bacterial", "prob_viral"]
    assert sorted(predictions.path) == sorted(manifest[manifest.fold.isin([1, 3])].path)
    card = json.loads((run / "fold-3" / "model" / "model.json").read_text())
    assert card["classes"] == ["covid", "normal", "bacterial", "viral"] and card["training"]["fold"] == 3
    assert "mean of folds" in result.output

    result = invoke("report", run, "--bootstrap", 50)
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-2:]
    assert last[0].startswith("accuracy ") and "95% CI" in last[0]
    assert last[1].startswith("covid recall ") and "95% CI" in last[1]
    html = (run / "report" / "report.html").read_text()
    assert "data:image/png;base64" in html and "not a medical device" in html


def test_data_dir_from_environment_and_missing_data_message(tmp_path):
    result = invoke("data", "prepare", "--out", tmp_path / "ds", env={"CORONET_DATA": str(tmp_path / "empty")})
    assert result.exit_code == 2
    assert "coronet data fetch" in result.output and "cohen" in result.output.lower()


def test_bad_settings_are_one_line_errors(tmp_path):
    result = invoke("data", "prepare", "--data", tmp_path, "--out", tmp_path / "x", "--split", "random")
    assert result.exit_code == 2
    result = invoke("cv", "--dataset", tmp_path, "--out", tmp_path / "r", "--profile", "fast")
    assert result.exit_code == 2 and "unknown profile" in result.output


def test_fetch_from_a_local_archive(tmp_path):
    """`coronet data fetch` wiring, with a file:// archive in the Ozturk repository's layout."""
    archive = tmp_path / "ozturk.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for folder in ("Covid-19", "No_findings", "Pneumonia"):
            png = io.BytesIO()
            write_xray(tmp_path / "img.png", seed=len(folder))
            png.write((tmp_path / "img.png").read_bytes())
            zf.writestr(f"COVID-19-master/X-Ray Image DataSet/{folder}/a.png", png.getvalue())
    data = tmp_path / "data"
    result = invoke("data", "fetch", "--data", data, "--source", "ozturk", "--url", f"ozturk={archive.as_uri()}")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (data / "ozturk-dataset2").iterdir()) == ["Covid-19", "No_findings", "Pneumonia"]
