"""Task label maps, head replacement, and fine-tuning a tiny 4-class run (real data) for the other tasks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from coronet.models.coronet import build_model, replace_classifier, set_trainable
from coronet.models.modeldir import load_model_dir
from coronet.tasks import (
    TASKS,
    default_class_map,
    merge_probabilities,
    parse_class_map,
    relabel,
    task_classes,
    task_of,
)
from coronet.training.finetune import finetune, fold_model

FOUR = ["covid", "normal", "bacterial", "viral", "viral", "bacterial"]


def table(labels):
    return pd.DataFrame({"path": [f"{i}.png" for i in range(len(labels))], "label": labels})


# --------------------------------------------------------------------------- label maps
def test_relabel_3class_merges_pneumonia():
    out = relabel(table(FOUR), "3class")
    assert list(out.label) == ["covid", "normal", "pneumonia", "pneumonia", "pneumonia", "pneumonia"]
    assert list(out.source_label) == FOUR


def test_relabel_binary_drops_pneumonia():
    out = relabel(table(FOUR), "binary")
    assert list(out.label) == ["covid", "normal"] and list(out.path) == ["0.png", "1.png"]


def test_relabel_covid_vs_rest_keeps_everything():
    out = relabel(table(FOUR + ["pneumonia"]), "covid-vs-rest")
    assert list(out.label) == ["covid"] + ["other"] * 6


def test_relabel_unknown_label_is_an_error():
    with pytest.raises(ValueError, match="no mapping for labels \\['tuberculosis'\\]"):
        relabel(table(["covid", "tuberculosis"]), "3class")
    with pytest.raises(ValueError, match="unknown task"):
        relabel(table(["covid"]), "5class")
    with pytest.raises(ValueError, match="unknown task"):
        task_classes("5class")


def test_task_of_any_order():
    assert task_of(["pneumonia", "covid", "normal"]).name == "3class"
    assert task_of(list(TASKS["4class"].classes)).name == "4class"
    assert task_of(["covid"]) is None


def test_class_maps_between_label_sets():
    four = TASKS["4class"].classes
    assert default_class_map(four, ["covid", "normal"]) == {c: c for c in four}
    assert default_class_map(four, ["covid", "normal", "pneumonia"]) == {
        "covid": "covid",
        "normal": "normal",
        "bacterial": "pneumonia",
        "viral": "pneumonia",
    }
    with pytest.raises(ValueError, match="--map"):
        default_class_map(["covid", "other"], ["covid", "normal", "pneumonia"])
    assert parse_class_map(["viral=pneumonia", " bacterial = pneumonia"]) == {
        "viral": "pneumonia",
        "bacterial": "pneumonia",
    }
    with pytest.raises(ValueError, match="MODEL_CLASS=DATA_LABEL"):
        parse_class_map(["viral"])


def test_merge_probabilities_keeps_all_mass():
    probabilities = np.array([[0.1, 0.2, 0.3, 0.4], [0.7, 0.1, 0.1, 0.1]])
    mapping = default_class_map(TASKS["4class"].classes, ["covid", "normal", "pneumonia"])
    merged, labels = merge_probabilities(probabilities, TASKS["4class"].classes, mapping)
    assert labels == ["covid", "normal", "pneumonia"]
    np.testing.assert_allclose(merged, [[0.1, 0.2, 0.7], [0.7, 0.1, 0.2]])
    with pytest.raises(ValueError, match="viral"):
        merge_probabilities(probabilities, TASKS["4class"].classes, {"covid": "a", "normal": "a", "bacterial": "b"})


# --------------------------------------------------------------------------- head replacement
def tiny_model(classes=4):
    return build_model(num_classes=classes, backbone="test_resnet", input_size=32, hidden=16)


def test_replace_classifier_only_last_layer_is_new():
    torch.manual_seed(0)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    replace_classifier(model, 3)
    after = model.state_dict()
    changed = {
        k for k in after if k not in before or after[k].shape != before[k].shape or not torch.equal(after[k], before[k])
    }
    assert changed == {"head.4.weight", "head.4.bias"}
    assert model.classifier.out_features == 3 and model.eval()(torch.rand(2, 1, 32, 32)).shape == (2, 3)


def test_set_trainable_parts():
    model = tiny_model()
    set_trainable(model, "head")
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    set_trainable(model, "classifier")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["head.4.weight", "head.4.bias"]
    set_trainable(model, "all")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError):
        set_trainable(model, "backbone")


@pytest.mark.slow  # trains or reads the real data
def test_fold_model_keeps_the_4class_weights(tiny_cv_run):
    source, _ = load_model_dir(tiny_cv_run / "fold-2" / "model")
    derived = fold_model(tiny_cv_run, 2, 3, seed=0)
    for name, value in source.state_dict().items():
        if not name.startswith("head.4."):
            assert torch.equal(value, derived.state_dict()[name]), name
    assert derived.classifier.out_features == 3
    assert torch.equal(derived.classifier.weight, fold_model(tiny_cv_run, 2, 3, seed=0).classifier.weight)


# --------------------------------------------------------------------------- fine-tuning runs
@pytest.mark.slow  # trains or reads the real data
@pytest.mark.parametrize("task", ["3class", "binary"])
def test_finetune_run(tiny_cv_run, tmp_path, task):
    out = tmp_path / task
    predictions = finetune(tiny_cv_run, out, task=task, profile="tiny", folds=[1, 2], progress=False)
    classes = list(TASKS[task].classes)
    source = pd.read_csv(tiny_cv_run / "manifest.csv")
    expected = relabel(source[source.fold.isin([1, 2])], task)
    assert sorted(predictions.path) == sorted(expected.path)
    assert set(predictions.label) == set(classes)
    assert [c for c in predictions.columns if c.startswith("prob_")] == [f"prob_{c}" for c in classes]
    saved = pd.read_csv(out / "predictions.csv")
    assert len(saved) == len(predictions)
    card = json.loads((out / "fold-1" / "model" / "model.json").read_text())
    assert card["classes"] == classes and card["finetuned_from"]["task"] == "4class"
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == task and config["train"]["classes"] == classes
    # the backbone moved from the 4-class weights (train_layers=all in the tiny profile)
    model, _ = load_model_dir(out / "fold-1" / "model")
    source_model, _ = load_model_dir(tiny_cv_run / "fold-1" / "model")
    name = next(n for n in source_model.state_dict() if n.startswith("backbone.") and n.endswith("weight"))
    assert not torch.equal(model.state_dict()[name], source_model.state_dict()[name])


@pytest.mark.slow  # trains or reads the real data
def test_finetune_head_only_keeps_backbone(tiny_cv_run, tmp_path):
    finetune(
        tiny_cv_run,
        tmp_path,
        task="covid-vs-rest",
        profile="tiny",
        folds=[3],
        train_layers="head",
        progress=False,
    )
    model, _ = load_model_dir(tmp_path / "fold-3" / "model")
    source_model, _ = load_model_dir(tiny_cv_run / "fold-3" / "model")
    for name, value in source_model.state_dict().items():
        if name.startswith("backbone."):
            assert torch.equal(value, model.state_dict()[name]), name  # BatchNorm statistics included


@pytest.mark.slow  # trains or reads the real data
def test_finetune_errors(tiny_cv_run, tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        finetune(tmp_path / "nothing", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown task"):
        finetune(tiny_cv_run, tmp_path / "out", task="7class")
    with pytest.raises(ValueError, match="--task 3class"):
        finetune(tiny_cv_run, tmp_path / "out", task="binary", data=tmp_path)


@pytest.mark.slow  # trains or reads the real data
def test_dataset2_overlap_and_clean_evaluation(tiny_cv_run, data_dir, tmp_path):
    from pathlib import Path

    from coronet.evaluation.report import write_report

    predictions = finetune(
        tiny_cv_run,
        tmp_path,
        task="3class",
        profile="tiny",
        data=data_dir / "ozturk-dataset2",
        folds=[1],
        progress=False,
    )
    manifest = pd.read_csv(tmp_path / "dataset" / "manifest.csv")
    # dataset-2's COVID-19 copies of Cohen films carry their Cohen patient, and a patient stays in one fold
    assert manifest[manifest.label == "covid"].patient_id.str.startswith("cohen:").mean() > 0.9
    assert manifest.groupby("patient_id").fold.nunique().max() == 1
    # all of dataset-2 but one No_findings film, whose two files decode to identical pixels
    assert manifest.label.value_counts().to_dict() == {"normal": 499, "pneumonia": 500, "covid": 125}
    overlap = pd.read_csv(tmp_path / "overlap.csv")
    # dataset-2's COVID-19 films are copies of Cohen films: the overlap is real, COVID-only, and the matched
    # files mostly carry the same name in both collections
    assert len(overlap) > 30
    assert set(overlap.label) == {"covid"} and set(overlap.reference_label) == {"covid"}
    assert set(overlap.kind) == {"film", "patient"}
    assert set(predictions.overlap_kind.fillna("")) == {"", "film", "patient"}
    same_name = overlap.path.map(lambda p: Path(p).stem) == overlap.reference_path.map(lambda p: Path(p).stem)
    assert same_name.mean() > 0.8
    assert predictions.overlap.sum() == predictions.path.isin(set(overlap.path)).sum() > 0
    clean = pd.read_csv(tmp_path / "no-overlap" / "predictions.csv")
    assert len(clean) == len(predictions) - predictions.overlap.sum()
    assert not clean.path.isin(set(overlap.path)).any()
    write_report(tmp_path / "no-overlap", n_bootstrap=10)
    table6 = pd.read_csv(tmp_path / "no-overlap" / "report" / "table6.csv", index_col=0)
    assert table6.loc["accuracy", "accuracy_paper"] == 90.21


@pytest.mark.slow  # trains or reads the real data
def test_finetune_head_on_precomputed_features(tiny_cv_run, tmp_path):
    """The fast profile's fine-tune: the frozen backbone's features once, then only the head trains on them."""
    from coronet.training.fit import backbone_features

    predictions = finetune(
        tiny_cv_run,
        tmp_path,
        task="3class",
        profile="tiny",
        folds=[2],
        train_layers="head",
        head_on_features=True,
        epochs=3,
        tta=True,
        schedule="cosine",
        warmup=0.2,
        progress=False,
    )
    source = pd.read_csv(tiny_cv_run / "manifest.csv")
    assert sorted(predictions.path) == sorted(source[source.fold == 2].path)
    assert pd.read_csv(tmp_path / "fold-2" / "metrics.csv").epoch.tolist() == [1, 2, 3]
    model, card = load_model_dir(tmp_path / "fold-2" / "model")
    source_model, _ = load_model_dir(tiny_cv_run / "fold-2" / "model")
    for name, value in source_model.state_dict().items():
        if name.startswith("backbone."):
            assert torch.equal(value, model.state_dict()[name]), name
    assert not torch.equal(model.head[2].weight, source_model.head[2].weight)  # the dense layer trained
    assert card["head_trained_on_features"] and card["inference"] == {"tta": "hflip"}

    # the saved model, used as prediction uses it (the card's TTA), gives the run's validation probabilities
    from coronet.data.prepare import load_cache
    from coronet.models.modeldir import inference_model

    rows = source[source.fold == 2]
    cache = load_cache(json.loads((tiny_cv_run / "config.json").read_text())["dataset"]["path"], 32)
    images = torch.from_numpy(np.asarray(cache[rows.cache_index.to_numpy()]))[:, None].float() / 255
    with torch.no_grad():
        probabilities = torch.softmax(inference_model(model.eval(), card)(images), 1).numpy()
    expected = predictions.set_index("path").loc[rows.path, [f"prob_{c}" for c in card["classes"]]].to_numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    features = backbone_features(model, cache, rows.cache_index, 32)
    assert features.shape == (len(rows), int(np.prod(model.feature_shape)))


@pytest.mark.slow  # trains or reads the real data
def test_a_new_task_is_one_task_definition(tiny_cv_run, tmp_path, monkeypatch):
    """Normal vs pneumonia, defined by one Task in this test, fine-tunes on the tiny profile and reports."""
    from coronet.evaluation.report import write_report
    from coronet.tasks import TASKS, Task

    task = Task(
        "normal-vs-pneumonia",
        ("normal", "pneumonia"),
        {"covid": None, "normal": "normal", "bacterial": "pneumonia", "viral": "pneumonia", "pneumonia": "pneumonia"},
    )
    monkeypatch.setitem(TASKS, task.name, task)
    predictions = finetune(tiny_cv_run, tmp_path, task=task.name, profile="tiny", folds=[1], progress=False)
    assert set(predictions.label) == {"normal", "pneumonia"}
    assert [c for c in predictions.columns if c.startswith("prob_")] == ["prob_normal", "prob_pneumonia"]
    summary = write_report(tmp_path, n_bootstrap=10)
    assert summary.task == "normal-vs-pneumonia" and summary.covid_recall is None
