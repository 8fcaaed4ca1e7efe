"""coronet evaluate: a trained model on another dataset, with explicit class mapping; the CLI end to end."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import write_xray
from coronet.cli import app
from coronet.deploy.predict import Predictor
from coronet.evaluation.evaluate import evaluate
from coronet.tasks import TASKS


@pytest.fixture()
def ozturk_like(tmp_path):
    """A tiny tree in dataset-2's layout (3 classes), plus one unreadable file."""
    root = tmp_path / "ozturk"
    for k, folder in enumerate(["Covid-19", "No_findings", "Pneumonia"]):
        for i in range(3):
            write_xray(root / folder / f"0000{k}{i}00_00{i}.png", seed=10 * k + i, size=(48, 40))
    (root / "Pneumonia" / "00009999_000.png").write_bytes(b"not an image")
    return root


@pytest.mark.slow  # trains or reads the real data
def test_4class_model_on_3class_data_merges_pneumonia(tiny_cv_run, ozturk_like, tmp_path, caplog):
    model_dir = tiny_cv_run / "fold-1" / "model"
    caplog.set_level(logging.INFO, logger="coronet")
    predictions = evaluate(model_dir, ozturk_like, "ozturk", tmp_path / "run")
    assert len(predictions) == 9
    assert [c for c in predictions.columns if c.startswith("prob_")] == ["prob_covid", "prob_normal", "prob_pneumonia"]
    # the merged probability is the sum of the model's bacterial and viral outputs for the same film
    four = Predictor(model_dir)
    row = predictions.iloc[0]
    raw = next(iter(four.predict_files([row.path])))
    probs = dict(zip(TASKS["4class"].classes, raw.probabilities))
    assert row.prob_pneumonia == pytest.approx(probs["bacterial"] + probs["viral"], abs=2e-6)
    assert row.prob_covid == pytest.approx(probs["covid"], abs=2e-6)
    assert np.allclose(predictions.filter(like="prob_").sum(axis=1), 1, atol=1e-5)
    skipped = pd.read_csv(tmp_path / "run" / "skipped.csv")
    assert list(skipped.path.map(lambda p: p.endswith("00009999_000.png"))) == [True]
    assert any("00009999_000.png" in line for line in caplog.messages)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["class_map"]["viral"] == "pneumonia" and config["skipped"] == 1


@pytest.mark.slow  # trains or reads the real data
def test_explicit_map_and_left_out_labels(tiny_cv_run, ozturk_like, tmp_path, caplog):
    mapping = {"covid": "covid", "normal": "normal", "bacterial": "normal", "viral": "normal"}
    caplog.set_level(logging.INFO, logger="coronet")
    predictions = evaluate(tiny_cv_run / "fold-1" / "model", ozturk_like, "ozturk", tmp_path / "run", class_map=mapping)
    assert set(predictions.label) == {"covid", "normal"} and len(predictions) == 6
    # 3 films + the bad file
    assert any("left out 4 images" in line and "pneumonia 4" in line for line in caplog.messages)


@pytest.mark.slow  # trains or reads the real data
def test_evaluate_cli_writes_report(tiny_cv_run, ozturk_like, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tiny_cv_run / "fold-2" / "model" / "model.json"),
            "--data",
            str(ozturk_like),
            "--source",
            "ozturk",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-2:]
    assert last[0].startswith("covid recall ")
    assert last[1].startswith("worst false-COVID rate over negative sources ") and "(ozturk," in last[1]
    assert (tmp_path / "r" / "report" / "report.html").is_file()
    bad = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tiny_cv_run / "fold-2" / "model"),
            "--data",
            str(ozturk_like),
            "--source",
            "ozturk",
            "--out",
            str(tmp_path / "x"),
            "--map",
            "covid",
        ],
    )
    assert bad.exit_code == 2 and "MODEL_CLASS=DATA_LABEL" in bad.output


@pytest.mark.slow  # trains or reads the real data
def test_external_report_is_not_laid_out_as_a_cross_validation(tiny_cv_run, ozturk_like, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tiny_cv_run / "fold-2" / "model"),
            "--data",
            str(ozturk_like),
            "--source",
            "ozturk",
            "--out",
            str(tmp_path / "r"),
        ],
    )
    assert result.exit_code == 0, result.output
    # the card names its training data: the user is told to check, on stderr like every warning
    assert "--training-dataset" in result.stderr and "--training-dataset" not in result.stdout
    page = (tmp_path / "r" / "report" / "report.html").read_text()
    assert "External evaluation on" in page and "<h2>Table" not in page  # no Table III/IV/V section
    assert "for reference only" in page and "not comparable" in page


@pytest.mark.slow  # trains or reads the real data
def test_training_dataset_overlap_is_left_out(tiny_cv_run, data_dir, tmp_path, caplog):
    """Kaggle films the model trained on (and films of its training patients) are left out and listed."""
    import shutil

    from coronet.layout import DatasetDir

    config = json.loads((tiny_cv_run / "config.json").read_text())
    training = config["dataset"]["path"]
    manifest = pd.read_csv(f"{training}/manifest.csv")
    trained = manifest[(manifest.source == "kaggle") & (manifest.fold != 2)].head(4)
    folder = tmp_path / "films"
    for k, row in enumerate(trained.itertuples()):
        (folder / row.label).mkdir(parents=True, exist_ok=True)
        shutil.copy(row.path, folder / row.label / f"copy{k}.jpg")  # renamed copies: found as the same film
    fresh = sorted((data_dir / "kaggle-pneumonia").rglob("*.jpeg")) + sorted(
        (data_dir / "kaggle-pneumonia").rglob("*.jpg")
    )
    extra = [p for p in fresh if str(p.resolve()) not in set(manifest.path)][:3]
    for k, path in enumerate(extra):
        (folder / "normal").mkdir(exist_ok=True)
        shutil.copy(path, folder / "normal" / f"new{k}.jpg")
    caplog.set_level(logging.INFO, logger="coronet")
    predictions = evaluate(
        tiny_cv_run / "fold-2" / "model", folder, "folder", tmp_path / "out", training_dataset=training
    )
    overlap = pd.read_csv(tmp_path / "out" / "overlap.csv")
    assert len(overlap) == 4 and set(overlap.kind) == {"film"}
    assert not predictions.path.str.contains("copy").any() and len(predictions) == len(extra)
    assert any("left out 4 of" in line for line in caplog.messages)
    record = json.loads((tmp_path / "out" / "config.json").read_text())
    assert record["left_out_overlap"] == 4 and record["training_dataset"]
    assert (
        DatasetDir(training).manifest_sha256()
        == json.loads((tiny_cv_run / "fold-2" / "model" / "model.json").read_text())["training"]["dataset_sha256"]
    )


def test_the_overlap_warning_is_a_warning_on_stderr(tiny_model_dir, tmp_path, caplog):
    """A card that names its training data: evaluate warns (level WARNING, so the CLI prints it on stderr, not
    among the results on stdout) that the films may overlap it."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    card = json.loads((model / "model.json").read_text())
    card["training"] = {"dataset_path": "/runs/x/dataset", "dataset_sha256": "ab" * 32}
    (model / "model.json").write_text(json.dumps(card))
    for k, label in enumerate(("covid", "normal")):
        write_xray(tmp_path / "films" / label / f"{label}.png", seed=k, size=(48, 40))
    caplog.set_level(logging.INFO, logger="coronet")
    evaluate(model, tmp_path / "films", "folder", tmp_path / "run")
    warned = [r for r in caplog.records if "--training-dataset" in r.getMessage()]
    assert [r.levelno for r in warned] == [logging.WARNING] and "/runs/x/dataset" in warned[0].getMessage()
    arguments = ["--model", str(model), "--data", str(tmp_path / "films"), "--out", str(tmp_path / "cli")]
    result = CliRunner().invoke(app, ["evaluate", *arguments, "--no-report"])
    assert result.exit_code == 0, result.output
    assert "warning: this model was trained on /runs/x/dataset" in result.stderr
    assert "--training-dataset" not in result.stdout and "2 images, accuracy" in result.stdout


def test_partial_label_films_are_kept_apart_from_the_accuracy(tiny_model_dir, tmp_path):
    """The source negatives' layout: ieee8023's "other" (not COVID-19) has no single right class."""
    from coronet.evaluation.report import write_report

    root = tmp_path / "source-negatives"
    for folder, classes in (("cohen", ("bacterial", "viral", "other")), ("actualmed", ("normal",))):
        rows = []
        for k, label in enumerate(classes):
            for i in range(2):
                name = f"{label}-{i}.png"
                write_xray(root / folder / label / name, seed=10 * k + i, size=(48, 40))
                rows.append({"patientid": f"{label}{i}", "view": "PA", "finding": label, "filename": f"{label}/{name}"})
        pd.DataFrame(rows).to_csv(root / folder / "metadata.csv", index=False)
    predictions = evaluate(tiny_model_dir, root, "source-negatives", tmp_path / "run")
    assert len(predictions) == 8 and set(predictions.source) == {"cohen", "actualmed"}
    other = predictions[predictions.label == "other"]
    assert len(other) == 2 and set(other.cohort) == {"partial-label"}
    assert set(predictions[predictions.label != "other"].cohort) == {"table1"}
    summary = write_report(tmp_path / "run", n_bootstrap=20)
    assert summary.n_images == 6  # the accuracy tables leave the partial labels out
    sources = pd.read_csv(tmp_path / "run" / "report" / "sources.csv")
    assert len(sources) == 4 and "other" in set(sources.label)  # ... the per-source table does not
