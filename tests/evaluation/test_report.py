"""Tests for coronet.evaluation.report on small synthetic predictions with known answers."""

from __future__ import annotations

import html
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import precision_recall_fscore_support

from coronet.evaluation import figures
from coronet.evaluation.bootstrap import bootstrap_ci
from coronet.evaluation.metrics import (
    accuracy,
    class_table,
    confusion,
    covid_operating_point,
    expected_calibration_error,
    fold_table,
    per_class_metrics,
    roc_aucs,
)
from coronet.evaluation.pages import DISCLAIMER
from coronet.evaluation.report import PAPER, summary_lines, write_report
from coronet.evaluation.results import RunResults
from coronet.tasks import task_of
from report_helpers import PAPER4, make_predictions, random_predictions


def drawn(path) -> np.ndarray:
    """The PNG at ``path`` as RGB pixels, checked to be a figure with data drawn on it. A blank or one-colour
    image fails, and so do empty axes: their frame, ticks and text are grey, while every figure of the report
    plots its data in colour (curves, bars, a colour map)."""
    with Image.open(path) as image:
        assert image.format == "PNG", f"{path}: not a PNG"
        pixels = np.asarray(image.convert("RGB"))
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert colours > 16 and pixels.std() > 10, f"{path}: looks blank ({colours} colours, std {pixels.std():.1f})"
    coloured = (pixels.max(axis=2).astype(int) - pixels.min(axis=2) > 40).mean()
    assert coloured > 0.001, f"{path}: nothing drawn in colour ({coloured:.2%} of the pixels)"
    return pixels


# --------------------------------------------------------------------------- per-class metrics


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_per_class_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c", "d"]
    # a small sample so that some classes may be missing or never predicted (undefined -> 0)
    labels = rng.choice(classes[:3], size=12)
    preds = rng.choice(classes, size=12)
    cm = confusion(labels, preds, classes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = per_class_metrics(cm, classes)
    p, r, f, s = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    np.testing.assert_allclose(ours["precision"], p)
    np.testing.assert_allclose(ours["recall"], r)
    np.testing.assert_allclose(ours["f1"], f)
    np.testing.assert_array_equal(ours["support"], s)


def test_specificity_by_hand():
    classes = ["a", "b", "c"]
    cm = np.array([[5, 1, 0], [2, 3, 1], [0, 4, 6]])
    m = per_class_metrics(cm, classes)
    # a: TN = 3+1+4+6 = 14, FP = 2+0 = 2 ; b: TN = 5+0+0+6 = 11, FP = 1+4 = 5 ; c: TN = 5+1+2+3 = 11, FP = 0+1 = 1
    np.testing.assert_allclose(m["specificity"], [14 / 16, 11 / 16, 11 / 12])
    np.testing.assert_allclose(m["precision"], [5 / 7, 3 / 8, 6 / 7])
    np.testing.assert_allclose(m["recall"], [5 / 6, 3 / 6, 6 / 10])


def test_confusion_rows_true_cols_pred():
    cm = confusion(["a", "a", "b"], ["b", "a", "b"], ["a", "b"])
    np.testing.assert_array_equal(cm, [[1, 1], [0, 1]])


# --------------------------------------------------------------------------- tables with known answers


@pytest.fixture
def known():
    # fold 1: x,x,y,y -> x,y,y,y (accuracy 0.75); fold 2: all right (accuracy 1.0)
    labels = ["x", "x", "y", "y", "x", "x", "y", "y"]
    preds = ["x", "y", "y", "y", "x", "x", "y", "y"]
    folds = [1, 1, 1, 1, 2, 2, 2, 2]
    return make_predictions(labels, preds, ["x", "y"], folds)


def test_fold_table_known(known):
    t = fold_table(known, ["x", "y"])
    assert list(t.index) == ["1", "2", "mean"]
    # fold 1: x P=1 R=.5 Spec=1 F1=2/3 ; y P=2/3 R=1 Spec=.5 F1=.8
    np.testing.assert_allclose(
        t.loc["1", ["precision", "recall", "specificity", "f1", "accuracy"]], [250 / 3, 75, 75, (200 / 3 + 80) / 2, 75]
    )
    np.testing.assert_allclose(t.loc["2", ["precision", "recall", "specificity", "f1", "accuracy"]], [100] * 5)
    np.testing.assert_allclose(
        t.loc["mean", ["precision", "recall", "specificity", "f1", "accuracy"]],
        [(250 / 3 + 100) / 2, 87.5, 87.5, ((200 / 3 + 80) / 2 + 100) / 2, 87.5],
    )
    assert round(t.loc["mean", "accuracy"], 4) == 87.5


def test_class_table_known(known):
    t = class_table(known, ["x", "y"])
    np.testing.assert_allclose(
        t.loc["x", ["precision", "recall", "specificity", "f1"]], [100, 75, 100, (200 / 3 + 100) / 2]
    )
    np.testing.assert_allclose(
        t.loc["y", ["precision", "recall", "specificity", "f1"]], [(200 / 3 + 100) / 2, 100, 75, 90]
    )


def test_ece_known(known):
    # all confidences 0.7 (one bin), accuracy 7/8 -> ECE = |0.875 - 0.7|
    assert expected_calibration_error(known, ["x", "y"]) == pytest.approx(0.175)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_deterministic():
    df = random_predictions(60, ["a", "b", "c"], seed=5)
    first = bootstrap_ci(df, accuracy, n=200, seed=3)
    assert first == bootstrap_ci(df, accuracy, n=200, seed=3)
    assert first != bootstrap_ci(df, accuracy, n=200, seed=4)
    point, low, high = first
    assert point == pytest.approx(accuracy(df))
    assert low <= point <= high


def test_bootstrap_patient_is_the_unit():
    rng = np.random.default_rng(0)
    n = 40
    labels = ["a"] * n
    preds = ["a" if rng.random() < 0.8 else "b" for _ in range(n)]
    preds[0] = "b"  # the duplicated patient is wrong
    base = make_predictions(labels, preds, ["a", "b"], [1] * n)
    copies = pd.concat([base.iloc[[0]]] * 50, ignore_index=True)
    grouped = pd.concat([base, copies], ignore_index=True)  # copies share patient p0
    independent = grouped.copy()
    independent.loc[n:, "patient_id"] = [f"fake{i}" for i in range(len(copies))]

    _, lo_g, hi_g = bootstrap_ci(grouped, accuracy, n=500, seed=0)
    _, lo_i, hi_i = bootstrap_ci(independent, accuracy, n=500, seed=0)
    assert (hi_i - lo_i) < (hi_g - lo_g)
    # the grouped interval is clearly wide: one patient carries most of the images
    assert (hi_g - lo_g) > 1.5 * (hi_i - lo_i)


# --------------------------------------------------------------------------- ROC, operating point


def test_roc_skips_single_valued_class_and_operating_point():
    df = random_predictions(80, PAPER4, seed=2)
    df.loc[df["label"] == "viral", "label"] = "normal"  # viral absent as a label
    aucs = roc_aucs(df, PAPER4)
    assert "viral" not in aucs and set(aucs) == {"covid", "normal", "bacterial"}
    op = covid_operating_point(df)
    y = df["label"] == "covid"
    assert op["recall"] >= 0.98
    assert ((df.loc[y, "prob_covid"] >= op["threshold"]).mean()) == pytest.approx(op["recall"])
    # any higher threshold among the scores falls below the target
    higher = df.loc[df["prob_covid"] > op["threshold"], "prob_covid"]
    if len(higher):
        assert (df.loc[y, "prob_covid"] >= higher.min()).mean() < 0.98
    assert op["specificity"] == pytest.approx((df.loc[~y, "prob_covid"] < op["threshold"]).mean())


# --------------------------------------------------------------------------- write_report


def test_write_report(tmp_path):
    run = tmp_path / "my-run"
    run.mkdir()
    patients = [f"p{i // 3}" for i in range(96)]
    df = random_predictions(96, PAPER4, seed=7, folds=4, patients=patients)
    df.to_csv(run / "predictions.csv", index=False)
    (run / "fold-1").mkdir()
    pd.DataFrame(
        {
            "epoch": [1, 2],
            "train_loss": [1.2, 0.9],
            "train_acc": [0.4, 0.6],
            "val_loss": [1.1, 1.0],
            "val_acc": [0.5, 0.55],
        }
    ).to_csv(run / "fold-1" / "metrics.csv", index=False)

    summary = write_report(run, n_bootstrap=50, seed=0)

    out = run / "report"
    page = (out / "report.html").read_text()
    assert "data:image/png;base64" in page
    assert "not a medical device" in page
    assert "<title>Cross-validation report: my-run</title>" in page
    # compact: ours / paper / difference in one cell; counts as integers; a summary sentence on top
    assert "accuracy (ours / paper / diff)" in page and "accuracy_paper" not in page
    assert "On 96 films of 32 patients: accuracy" in page and "32.00" not in page
    t3 = pd.read_csv(out / "table3.csv", index_col=0)
    assert "mean" in t3.index.astype(str)
    assert {"accuracy_paper", "accuracy_diff"} <= set(t3.columns)
    assert t3.loc["mean", "accuracy_paper"] == PAPER["table3"]["mean"]["accuracy"]
    t4 = pd.read_csv(out / "table4.csv", index_col=0)
    assert t4.loc["covid", "recall_paper"] == 98.25
    assert (out / "ci.csv").is_file() and (out / "report.md").is_file()
    for k in (1, 2, 3, 4):
        drawn(out / f"confusion-fold-{k}.png")
    for name in ("confusion-pooled.png", "roc.png", "calibration.png"):
        drawn(out / name)
    saved = json.loads((out / "summary.json").read_text())
    for key in ("accuracy", "accuracy_ci", "covid_recall", "covid_recall_ci"):
        assert saved[key] is not None, key
    # the record is what summary.json says, and reads back from it unchanged
    assert json.dumps(summary.to_json()) == json.dumps(saved) == json.dumps(RunResults.from_json(saved).to_json())
    assert summary.accuracy.value == pytest.approx(accuracy(df))
    assert set(summary.auc) == set(PAPER4)
    lines = summary_lines(summary)
    assert len(lines) == 3
    assert lines[0].startswith("accuracy ") and "95% CI" in lines[0] and "32 patients" in lines[0]
    assert lines[1].startswith("covid recall ")
    assert lines[2].startswith("worst false-COVID rate over negative sources ")  # the per-source headline


def test_write_report_other_classes(tmp_path):
    df = random_predictions(30, ["a", "b"], seed=1)
    df.to_csv(tmp_path / "predictions.csv", index=False)
    summary = write_report(tmp_path, out=tmp_path / "elsewhere", n_bootstrap=20)
    t3 = pd.read_csv(tmp_path / "elsewhere" / "table3.csv", index_col=0)
    assert not any(c.endswith("_paper") for c in t3.columns)
    assert summary.covid_recall is None
    assert summary_lines(summary)[1] == "covid recall n/a"


def test_task_of_and_table5_row(tmp_path):
    # one spelling per task (its name); the paper's Table V row is the task's title
    assert task_of(["viral", "covid", "normal", "bacterial"]).title == "4-class"
    assert task_of(["covid", "normal", "pneumonia"]).title == "3-class"
    assert task_of(["normal", "covid"]).name == "binary"
    assert task_of(["covid", "other"]).title == "covid-vs-rest"
    assert task_of(["a", "b"]) is None
    # binary run: 2 folds, fold 1 all right, fold 2 half right -> accuracy mean (100 + 50) / 2
    labels = ["covid", "normal", "covid", "normal"] * 2
    preds = ["covid", "normal", "covid", "normal", "covid", "covid", "covid", "covid"]
    df = make_predictions(labels, preds, ["covid", "normal"], folds=[1] * 4 + [2] * 4)
    df.to_csv(tmp_path / "predictions.csv", index=False)
    summary = write_report(tmp_path, n_bootstrap=10)
    assert summary.task == "binary"
    assert list(pd.read_csv(tmp_path / "report" / "table5.csv").task) == ["binary"]
    t5 = pd.read_csv(tmp_path / "report" / "table5.csv", index_col=0)
    assert list(t5.index) == ["binary"]
    assert t5.loc["binary", "accuracy"] == pytest.approx(75.0)
    assert t5.loc["binary", "accuracy_paper"] == PAPER["table5"]["binary"]["accuracy"]
    assert t5.loc["binary", "accuracy_diff"] == pytest.approx(75.0 - 99.0)
    # fold 2: covid P 0.5 R 1, normal P 0 (undefined -> 0) R 0 -> macro P 0.25; fold 1 P 1 -> mean 62.5
    assert t5.loc["binary", "precision"] == pytest.approx(62.5)
    assert not (tmp_path / "report" / "table6.csv").exists()
    assert "Table V" in (tmp_path / "report" / "report.md").read_text()


def test_table6_for_dataset2_runs(tmp_path):
    classes = ["covid", "normal", "pneumonia"]
    labels = ["covid", "normal", "pneumonia"] * 4
    preds = ["covid", "normal", "pneumonia"] * 3 + ["normal", "normal", "covid"]
    make_predictions(labels, preds, classes, folds=[1] * 12).to_csv(tmp_path / "predictions.csv", index=False)
    (tmp_path / "config.json").write_text('{"paper_table": "table6"}')
    write_report(tmp_path, n_bootstrap=10)
    t6 = pd.read_csv(tmp_path / "report" / "table6.csv", index_col=0)
    assert t6.loc["accuracy", "accuracy"] == pytest.approx(10 / 12 * 100)
    assert t6.loc["accuracy", "accuracy_paper"] == 90.21
    assert t6.loc["covid", "recall_paper"] == 89.0
    assert t6.loc["pneumonia", "recall"] == pytest.approx(75.0)  # 3 of 4 pneumonia right
    assert t6.loc["covid", "precision"] == pytest.approx(75.0)  # 3 of 4 covid calls right


def test_sample_predictions_show_hits_and_misses():
    labels = ["covid"] * 5 + ["normal"] * 5
    preds = ["covid"] * 4 + ["normal"] + ["normal"] * 5
    df = make_predictions(labels, preds, ["covid", "normal"], folds=[1] * 10)
    picked = figures.sample_predictions(df, ["covid", "normal"], per_class=2, seed=3)
    covid = picked[picked["label"] == "covid"]
    assert list(covid["pred"]) == ["covid", "normal"]  # one hit, then the only miss
    assert list(picked[picked["label"] == "normal"]["pred"]) == ["normal", "normal"]
    assert picked.equals(figures.sample_predictions(df, ["covid", "normal"], per_class=2, seed=3))


def test_report_draws_sample_grid_from_readable_images(tmp_path):
    from conftest import write_xray

    labels, preds = ["covid", "normal", "covid", "normal"], ["covid", "covid", "normal", "normal"]
    df = make_predictions(labels, preds, ["covid", "normal"], folds=[1, 1, 2, 2])
    df["path"] = [str(write_xray(tmp_path / "img" / f"{i}.png", seed=i)) for i in range(3)] + [
        str(tmp_path / "img" / "gone.png")
    ]  # a moved image is left out, not an error
    df.to_csv(tmp_path / "predictions.csv", index=False)
    images, shown = figures.load_sample_images(df)
    assert len(images) == 3 and images[0].shape == (224, 224)
    assert list(shown.index) == [0, 1, 2]
    write_report(tmp_path, n_bootstrap=10)
    drawn(tmp_path / "report" / "samples.png")
    assert "sample predictions (Fig. 8)" in (tmp_path / "report" / "report.html").read_text()


def test_prediction_grid_accepts_gray_and_rgb(tmp_path):
    gray = np.zeros((20, 20), np.uint8)
    rgb = np.zeros((20, 20, 3), np.uint8)  # two black films: the only large black areas of the figure
    path = figures.plot_prediction_grid(
        [gray, rgb],
        ["a", "b"],
        [[0.9, 0.1], [0.2, 0.8]],
        tmp_path / "g.png",
        true_labels=["a", None],
        names=["x.png", "y.dcm"],
    )
    pixels = drawn(path)
    black = (pixels.max(axis=2) < 8).mean()
    assert black > 0.05, f"the films are not drawn ({black:.1%} of the figure is black)"


def test_every_report_says_it_is_not_a_medical_device(tmp_path):
    make_predictions(["covid", "normal"] * 2, ["covid", "normal"] * 2, ["covid", "normal"], folds=[1, 1, 2, 2]).to_csv(
        tmp_path / "predictions.csv", index=False
    )
    write_report(tmp_path, n_bootstrap=10)
    markdown = (tmp_path / "report" / "report.md").read_text().splitlines()
    assert markdown[2] == f"*{DISCLAIMER}*"  # under the title
    assert DISCLAIMER in (tmp_path / "report" / "report.html").read_text()


def test_the_roc_figure_of_films_of_one_label_says_so_instead_of_warning(tmp_path):
    """dataset-2 without the training films can hold COVID-19 films only: no ROC, no empty-legend warning."""
    from coronet.evaluation.figures import plot_roc

    films = pd.DataFrame({"label": ["covid"] * 3, "prob_covid": [0.9, 0.8, 0.2], "prob_normal": [0.1, 0.2, 0.8]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plot_roc(films, ["covid", "normal"], {}, tmp_path / "roc.png").is_file()


def test_a_run_of_one_label_says_its_accuracy_is_that_class_recall(tmp_path):
    # dataset-2 without overlap under --adult-negatives holds COVID-19 films only: accuracy = COVID-19 recall
    labels = ["covid"] * 6
    preds = ["covid", "covid", "covid", "normal", "covid", "viral"]
    make_predictions(labels, preds, PAPER4, folds=[1, 1, 1, 2, 2, 2]).to_csv(tmp_path / "predictions.csv", index=False)
    results = write_report(tmp_path, n_bootstrap=10)
    assert results.single_label == "covid" and results.films_per_label == {"covid": 6}
    assert results.accuracy.value == pytest.approx(results.covid_recall.value) == pytest.approx(4 / 6)
    note = "All 6 films are covid: the accuracy is that class's recall"
    assert note in (tmp_path / "report" / "report.md").read_text()
    assert note in html.unescape((tmp_path / "report" / "report.html").read_text())
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["films_per_label"] == {"covid": 6}

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    make_predictions(["covid", "normal"] * 3, ["covid"] * 6, PAPER4, [1, 1, 1, 2, 2, 2]).to_csv(
        mixed / "predictions.csv", index=False
    )
    both = write_report(mixed, n_bootstrap=10)
    assert both.single_label is None and both.films_per_label == {"covid": 3, "normal": 3}  # class order
    assert "films are" not in (mixed / "report" / "report.md").read_text()
