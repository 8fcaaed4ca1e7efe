"""The run directory API (coronet.layout): the file names outside checks read, finished folds, the config
round trip and the resume decision, without training anything."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from coronet.layout import (
    AuditDir,
    DatasetDir,
    File,
    FoldDir,
    ReportDir,
    ReproduceDir,
    RunDir,
    Sub,
    file_sha256,
    runtime_of,
)

RUNTIME = ("precision", "devices", "num_workers")


def _finish(fold: FoldDir, model: bool = True, predictions: bool = True) -> None:
    fold.model.mkdir(parents=True, exist_ok=True)
    if model:
        fold.model_card.write_text("{}")
    if predictions:
        fold.predictions.write_text("path,patient_id,fold,label,prob_covid\n")


def _record(**train) -> dict:
    return {
        "profile": "tiny",
        "train": {"lr": 0.001, "epochs": 2, "precision": "32", "devices": "auto", "num_workers": 0, **train},
        "precision_resolved": train.get("precision", "32"),
        "folds": (1, 2),
        "dataset": {"path": "/data/set", "manifest_sha256": "abc"},
        "machine": {"cpus": 2},
    }


def test_the_file_names_are_the_documented_ones(tmp_path):
    run = RunDir(str(tmp_path))
    assert run.path == tmp_path and RunDir(tmp_path) == run and hash(RunDir(tmp_path)) == hash(run)
    assert run != FoldDir(tmp_path)
    assert run.config == tmp_path / "config.json" and run.manifest == tmp_path / "manifest.csv"
    assert run.predictions == tmp_path / "predictions.csv" and run.results == tmp_path / "results.md"
    assert run.adult_test == tmp_path / "adult-test" / "predictions.csv"
    assert run.no_overlap.predictions == tmp_path / "no-overlap" / "predictions.csv"
    fold = run.fold(3)
    assert fold.path == tmp_path / "fold-3" and fold.model_card == tmp_path / "fold-3" / "model" / "model.json"
    assert fold.last_checkpoint == tmp_path / "fold-3" / "checkpoints" / "last.ckpt"
    assert fold.metrics.name == "metrics.csv" and fold.curves.name == "curves.png"
    report = run.report
    assert isinstance(report, ReportDir) and report.path == tmp_path / "report"
    assert (report.markdown.name, report.html.name, report.summary.name) == ("report.md", "report.html", "summary.json")
    assert report.table("table3").name == "table3.csv" and report.figure("roc").name == "roc.png"
    audit = run.audit
    assert isinstance(audit, AuditDir) and audit.summary == tmp_path / "audit" / "audit.json"
    assert audit.predictions("lungs-only").name == "predictions-lungs-only.csv"
    assert audit.retrained(1).path == tmp_path / "audit" / "retrained" / "fold-1"
    assert audit.occluded_dataset.manifest == tmp_path / "audit" / "lungs-removed-dataset" / "manifest.csv"
    out = ReproduceDir(tmp_path)
    assert out.run("4class").fold(1).model == tmp_path / "4class" / "fold-1" / "model"
    assert out.final.model == tmp_path / "final" / "model" and out.dataset.path == tmp_path / "dataset"
    assert out.report.html == tmp_path / "report.html" and out.timings == tmp_path / "timings.json"


#: Every file and directory the directory classes declare (File, Sub), as a path below the directory: a new
#: declaration is added here, and a changed name fails.
DECLARED = {
    DatasetDir: {"manifest": "manifest.csv", "signatures": "signatures.npy", "record": "prepare.json"},
    FoldDir: {
        "model": "model",
        "model_card": "model/model.json",
        "metrics": "metrics.csv",
        "curves": "curves.png",
        "predictions": "predictions.csv",
        "checkpoints": "checkpoints",
        "last_checkpoint": "checkpoints/last.ckpt",
        "raw_predictions": "val-outputs.csv",
        "logs": "logs",
    },
    ReportDir: {"markdown": "report.md", "html": "report.html", "summary": "summary.json"},
    AuditDir: {
        "markdown": "audit.md",
        "html": "audit.html",
        "summary": "audit.json",
        "gradcam_mass": "gradcam-mass.csv",
        "gradcam_examples": "gradcam-examples.png",
        "acquisition_features": "acquisition-features.csv",
        "occluded_dataset": "lungs-removed-dataset",
    },
    RunDir: {
        "config": "config.json",
        "manifest": "manifest.csv",
        "predictions": "predictions.csv",
        "results": "results.md",
        "report": "report",
        "audit": "audit",
        "adult_test": "adult-test/predictions.csv",
        "leave_out": "leave-out/predictions.csv",
        "model_card": "model.json",
        "overlap": "overlap.csv",
        "skipped": "skipped.csv",
        "source_run": "source-run.json",
        "own_dataset": "dataset",
    },
    ReproduceDir: {"dataset": "dataset", "final": "final", "timings": "timings.json", "report": "."},
}


@pytest.mark.parametrize("kind", list(DECLARED), ids=lambda kind: kind.__name__)
def test_every_declared_file_has_its_documented_path_and_type(kind, tmp_path):
    declared = {
        name
        for klass in kind.__mro__
        for name, value in vars(klass).items()
        if isinstance(value, (File, Sub)) and getattr(kind, name) is value  # a subclass's own wins
    }
    assert declared == set(DECLARED[kind])
    directory = kind(tmp_path)
    for name, relative in DECLARED[kind].items():
        found = getattr(directory, name)
        declaration = getattr(kind, name)
        if isinstance(declaration, Sub):
            assert type(found) is declaration.kind and found.path == tmp_path / relative, name
        else:
            assert type(found) is type(tmp_path) and found == tmp_path / relative, name


def test_finished_folds_need_a_model_and_predictions(tmp_path):
    run = RunDir(tmp_path)
    _finish(run.fold(1))
    _finish(run.fold(2), predictions=False)  # trained, not yet predicted
    _finish(run.fold(3), model=False)  # an interrupted fold: predictions of an earlier epoch, no model
    _finish(run.fold(10))
    (tmp_path / "fold-x").mkdir()  # not a fold
    assert run.finished_folds([1, 2, 3, 4, 10]) == {1, 10}
    assert run.folds_without_model([1, 2, 3, 4]) == [3, 4]
    assert [fold.path.name for fold in run.folds()] == ["fold-1", "fold-2", "fold-3", "fold-10"]  # by number


def test_the_config_round_trips_and_a_resume_may_change_only_how_it_runs(tmp_path):
    run = RunDir(tmp_path / "run")
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        run.read_config()
    written = run.write_config(_record(), RUNTIME)
    assert written["folds"] == [1, 2]  # as read back: JSON types
    assert run.read_config() == written and "runtime_history" not in written
    assert run.dataset == DatasetDir("/data/set")

    resumed = run.write_config(_record(precision="bf16-mixed", devices="1", num_workers=4), RUNTIME)
    assert run.read_config() == resumed and resumed["train"]["precision"] == "bf16-mixed"
    assert resumed["runtime_history"] == [
        {"precision": "32", "devices": "auto", "num_workers": 0, "precision_resolved": "32", "machine": {"cpus": 2}}
    ]
    assert runtime_of(resumed, RUNTIME)["precision"] == "bf16-mixed"

    before = run.config.read_text()
    with pytest.raises(ValueError, match=r"other settings \(epochs, lr\); use a new --out"):
        run.write_config(_record(lr=0.1, epochs=3), RUNTIME)
    other_data = _record()
    other_data["dataset"] = {"path": "/data/set", "manifest_sha256": "def"}
    with pytest.raises(ValueError, match="other data"):
        run.write_config(other_data, RUNTIME)
    assert run.config.read_text() == before  # a refused resume writes nothing


def test_a_dataset_is_known_by_its_manifest_hash(tmp_path):
    dataset = DatasetDir(tmp_path)
    assert not dataset.exists()
    with pytest.raises(FileNotFoundError, match="not a prepared dataset"):
        dataset.read_manifest()
    pd.DataFrame({"path": ["a.png"], "label": ["covid"]}).to_csv(dataset.manifest, index=False)
    (tmp_path / "prepare.json").write_text(json.dumps({"config": {"seed": 0}}))
    assert dataset.exists() and dataset.read_record()["config"]["seed"] == 0
    import hashlib

    assert dataset.manifest_sha256() == hashlib.sha256(dataset.manifest.read_bytes()).hexdigest()
    assert file_sha256(dataset.manifest) == dataset.manifest_sha256()


def test_a_run_keeps_the_dataset_records_and_writes_its_results(tmp_path):
    dataset = DatasetDir(tmp_path / "data")
    dataset.path.mkdir()
    (dataset.path / "prepare.json").write_text("{}")
    (dataset.path / "summary.md").write_text("# data\n")
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.keep_dataset_records(dataset)
    assert sorted(p.name for p in run.path.iterdir()) == ["dataset-prepare.json", "dataset-summary.md"]
    table = pd.DataFrame({"path": ["a"], "patient_id": ["p"], "fold": [1], "label": ["covid"], "prob_covid": [1.0]})
    run.write_manifest(table)
    assert run.read_manifest().equals(table)
    run.write_results(table, "| fold |\n")
    assert run.read_predictions()["pred"].tolist() == ["covid"] and run.results.read_text() == "| fold |\n"


def test_the_resume_decision_is_rank_zeros_and_reaches_the_other_ranks(tmp_path, monkeypatch):
    import os

    from coronet.training.runs import FINISHED_FOLDS_ENV, finished_folds

    monkeypatch.setenv(FINISHED_FOLDS_ENV, "")  # restored after the test
    run = RunDir(tmp_path)
    _finish(run.fold(2))
    assert finished_folds(run, [1, 2], resume=False, rank=0) == set() and os.environ[FINISHED_FOLDS_ENV] == ""
    assert finished_folds(run, [1, 2], resume=True, rank=0) == {2} and os.environ[FINISHED_FOLDS_ENV] == "2"
    _finish(run.fold(1))  # written while another rank decides: it takes rank 0's decision, not the disk's
    assert finished_folds(run, [1, 2], resume=True, rank=1) == {2}
