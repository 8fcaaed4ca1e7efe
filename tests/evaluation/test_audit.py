"""The shortcut audit: occlusion is exact, the acquisition classifier can find a planted shortcut, and the
whole audit runs on a tiny cross-validation of the real data with the report's conventions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from coronet.cli import app
from coronet.evaluation.audit import (
    AuditConfig,
    acquisition_features,
    acquisition_predictions,
    audit,
    box_mask,
    lung_masks,
    occlude,
    parse_box,
)
from coronet.evaluation.results import AuditResults


def test_occlusion_zeroes_exactly_the_box_and_nothing_else():
    rng = np.random.default_rng(0)
    images = rng.integers(1, 256, size=(3, 40, 40), dtype=np.uint8)  # no zero pixels to begin with
    lungs = np.repeat(box_mask(40, (0.25, 0.1, 0.75, 0.9))[None], 3, axis=0)
    assert lungs[0].sum() == 20 * 32 and lungs[0, 4:36, 10:30].all()
    removed, only = occlude(images, lungs, "outside"), occlude(images, lungs, "lungs")
    assert (removed[lungs] == 0).all() and np.array_equal(removed[~lungs], images[~lungs])
    assert (only[~lungs] == 0).all() and np.array_equal(only[lungs], images[lungs])
    assert images.min() > 0  # the input is untouched


def test_masks_replace_the_box_where_a_film_has_one(tmp_path):
    from PIL import Image

    mask = np.zeros((20, 20), dtype=np.uint8)
    mask[:, :10] = 255
    Image.fromarray(mask).save(tmp_path / "film-a.png")
    masks = lung_masks(["/x/film-a.jpg", "/x/film-b.jpg"], 20, AuditConfig(masks=str(tmp_path)))
    assert masks[0, :, :10].all() and not masks[0, :, 10:].any()
    assert np.array_equal(masks[1], box_mask(20, AuditConfig().lung_box))


def test_lung_box_parsing():
    assert parse_box("0.1,0.2,0.9,0.8") == (0.1, 0.2, 0.9, 0.8)
    for bad in ("0.1,0.2,0.9", "a,b,c,d", "0.9,0.2,0.1,0.8", "0,0,1.5,1"):
        with pytest.raises(ValueError, match="lung box|--lung-box"):
            parse_box(bad)


def test_acquisition_classifier_finds_a_planted_size_shortcut(tmp_path):
    """Image size encodes the label: features without any diagnosis must reach ~100 %."""
    rng = np.random.default_rng(0)
    classes = ["covid", "normal", "bacterial", "viral"]
    rows, cache = [], []
    for k in range(160):
        label = classes[k % 4]
        rows.append(
            {
                "path": str(tmp_path / f"{k}.png"),
                "label": label,
                "patient_id": f"p{k}",
                "fold": 1 + (k // 4) % 4,
                "height": 200 + 100 * (k % 4),
                "width": 300,
                "cache_index": k,
            }
        )
        cache.append(rng.integers(0, 256, size=(16, 16), dtype=np.uint8))  # pixels: pure noise
    manifest = pd.DataFrame(rows)
    features = acquisition_features(manifest, np.stack(cache))
    predictions = acquisition_predictions(manifest, features, classes)
    assert {"path", "patient_id", "fold", "label", "prob_covid", "pred"} <= set(predictions.columns)
    assert (predictions.pred == predictions.label).mean() > 0.95


@pytest.fixture(scope="module")
def audited(tiny_cv_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    summary = audit(tiny_cv_run, out=out, config=AuditConfig(n_bootstrap=30, cam_per_group=2), progress=False)
    return out, summary


@pytest.mark.slow  # trains or reads the real data
def test_audit_writes_every_test_in_the_report_conventions(audited, tiny_cv_run):
    from coronet.evaluation.report import write_report

    out, summary = audited
    manifest = pd.read_csv(tiny_cv_run / "manifest.csv")
    for name in ("lungs-removed", "lungs-only", "acquisition"):
        table = pd.read_csv(out / f"predictions-{name}.csv")
        assert sorted(table.path) == sorted(manifest.path), name
        probs = table.filter(like="prob_")
        assert list(probs.columns) == ["prob_covid", "prob_normal", "prob_bacterial", "prob_viral"]
        assert ((probs.sum(axis=1) - 1).abs() < 1e-3).all()
        run = out / f"run-{name}"
        run.mkdir()
        table.to_csv(run / "predictions.csv", index=False)
        report = write_report(run, n_bootstrap=30)  # the same conventions: coronet report reads it
        assert report.accuracy.value == pytest.approx(summary.tests[name].accuracy.value)
        assert report.accuracy.ci == pytest.approx(summary.tests[name].accuracy.ci)
    retrained = pd.read_csv(out / "predictions-retrained-lungs-removed.csv")
    assert set(retrained.fold) == {1} and len(retrained) == (manifest.fold == 1).sum()
    assert summary.retrain_folds == [1]
    for key in ("retrained-lungs-removed", "lungs-removed", "lungs-only", "acquisition", "single-source", "gradcam"):
        assert key in summary.verdicts, key
    assert "threshold" in summary.verdicts["lungs-removed"]
    assert "Viviano" in summary.verdicts["gradcam"]
    page = (out / "audit.html").read_text()
    assert "Is it looking at the lungs?" in page and "Retrained with the lungs removed" in page
    saved = json.loads((out / "audit.json").read_text())
    assert saved["chance"] == pytest.approx(summary.chance)
    # the record is what audit.json says, and reads back from it unchanged
    written = json.dumps(summary.to_json(), default=float)
    assert written == json.dumps(saved) == json.dumps(AuditResults.from_json(saved).to_json())
    # the retraining used the lungs-removed films, with the run's own settings
    removed = np.load(out / "lungs-removed-dataset" / "images-32.npy")
    assert (removed[:, box_mask(32, AuditConfig().lung_box)] == 0).all()


@pytest.mark.slow  # trains or reads the real data
def test_audit_cli_errors(tiny_cv_run, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["audit", str(tiny_cv_run), "--lung-box", "0.5,0.5,0.2,0.9"])
    assert result.exit_code == 2 and "lung box" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["audit", str(tmp_path)])
    assert result.exit_code == 2 and "config.json" in result.output


@pytest.mark.slow  # trains or reads the real data
def test_the_external_audit_explains_merged_labels_with_the_models_own_class(tiny_cv_run, xray_paths, tmp_path):
    """3-class films on a 4-class model: a "pneumonia" prediction is explained by the model's own top class."""
    import shutil

    from coronet.evaluation.audit import audit_external
    from coronet.evaluation.evaluate import evaluate

    films = tmp_path / "films"
    for path in xray_paths:
        label = "covid" if "cohen" in str(path) else "normal" if "NORMAL" in str(path) else "pneumonia"
        (films / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, films / label / path.name)
    model = tiny_cv_run / "fold-1" / "model"
    out = tmp_path / "evaluation"
    evaluate(model, films, "folder", out)
    assert "pneumonia" in set(pd.read_csv(out / "predictions.csv").label)
    audit_external(out, model, config=AuditConfig(retrain=False, n_bootstrap=20))
    mass = pd.read_csv(out / "audit" / "gradcam-mass.csv")
    assert len(mass) and mass.pred.isin(["covid", "normal", "pneumonia"]).all()


@pytest.mark.slow  # trains or reads the real data
def test_the_external_audit_runs_tests_1_2_and_5_on_one_model(tiny_cv_run, xray_paths, tmp_path):
    """``coronet evaluate --audit``: the same occlusion and summary code as the audit, one model, no retraining."""
    import shutil

    from coronet.evaluation.audit import audit_external
    from coronet.evaluation.evaluate import evaluate

    films = tmp_path / "films"
    for path in xray_paths:
        label = "covid" if "cohen" in str(path) else "normal" if "NORMAL" in str(path) else None
        if label:  # labels among the model's classes (no merged probabilities)
            (films / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, films / label / path.name)
    model = tiny_cv_run / "fold-1" / "model"
    out = tmp_path / "evaluation"
    evaluate(model, films, "folder", out)
    summary = audit_external(out, model, config=AuditConfig(retrain=False, n_bootstrap=20))
    assert summary.external and summary.retrain_folds == [] and summary.single_source is None
    assert "single_source" not in summary.to_json()
    assert set(summary.tests) == {"intact", "lungs-removed", "lungs-only"}
    assert set(summary.verdicts) == {"lungs-removed", "lungs-only", "gradcam"}
    assert summary.chance == pytest.approx(0.5) and summary.run == str(out.resolve())
    for name in ("lungs-removed", "lungs-only"):
        table = pd.read_csv(out / "audit" / f"predictions-{name}.csv")
        assert sorted(table.path) == sorted(pd.read_csv(out / "predictions.csv").path) and set(table.fold) == {1}
    assert json.loads((out / "audit" / "audit.json").read_text())["verdicts"] == summary.verdicts
    assert (out / "audit" / "audit.html").is_file() and (out / "audit" / "gradcam-mass.csv").is_file()
    page = (out / "audit" / "audit.md").read_text()
    assert "recall normal" in page and "recall bacterial" not in page  # the classes the films have, in task order
