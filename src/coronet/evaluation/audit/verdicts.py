"""What the tests' predictions say: each test's figures with intervals, the single-source control, the verdicts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...layout import prob_column
from ..bootstrap import bootstrap_cis
from ..metrics import COVID, accuracy, recall_of
from ..results import AuditResults, AuditTestResult, Estimate
from .config import AuditConfig

#: Accuracy differences, in points, that the verdicts use.
NEAR, ABOVE_CHANCE = 0.10, 0.10


def summarise(
    tests: dict[str, pd.DataFrame],
    labels: pd.Series,
    cam_table: pd.DataFrame,
    config: AuditConfig,
    lungs: np.ndarray,
    classes: list[str],
    retrain_folds: list[int] = (),  # type: ignore[assignment]
    external: bool = False,
    run: Path | None = None,
) -> AuditResults:
    """Each test's figures with intervals, the controls, the Grad-CAM mass and the verdicts.

    labels: the tested films' labels (chance is the largest class's share). classes: the model's classes
    (the single-source control compares those other than COVID-19). external: an external evaluation's audit
    (tests 1, 2 and 5 only; ``run``: its directory).
    """
    intact = tests["intact"]
    results = {name: _figures(table, config.n_bootstrap, config.seed) for name, table in tests.items()}
    if retrain_folds:  # the intact models on the same folds, for a like-for-like comparison
        same = intact[intact["fold"].isin(retrain_folds)]
        results["intact-retrained-folds"] = _figures(same, config.n_bootstrap, config.seed)
    audited = AuditResults(
        chance=float(labels.value_counts(normalize=True).max()),
        tests=results,
        retrain_folds=list(retrain_folds),
        lung_fraction_of_film=float(lungs.mean()),
        external=external,
        run=str(Path(run or ".").resolve()) if external else None,
        config=config.record() if external else None,
        single_source=None if external else single_source(intact, classes),
        gradcam=_gradcam_summary(cam_table, external),
    )
    audited.verdicts = verdicts(audited)
    return audited


def _figures(table: pd.DataFrame, n: int, seed: int) -> AuditTestResult:
    """Accuracy, COVID-19 recall and each label's recall of one test's predictions, with bootstrap intervals."""
    statistics = {"accuracy": accuracy, "covid_recall": recall_of(COVID)}
    statistics.update({f"recall_{c}": recall_of(c) for c in sorted(set(table["label"]))})
    cis = bootstrap_cis(table, statistics, n=n, seed=seed)
    return AuditTestResult(len(table), {name: Estimate.of(triple) for name, triple in cis.items()})


def _gradcam_summary(cam_table: pd.DataFrame, external: bool) -> dict | None:
    """The mean share of Grad-CAM mass inside the lungs (and, for a run, per label and correct / wrong)."""
    if not len(cam_table):
        return None
    gradcam = {"mean_inside": float(cam_table["inside"].mean())}
    if not external:
        grouped = cam_table.groupby(["label", "correct"])["inside"].agg(["mean", "count"]).reset_index()
        gradcam["by_class"] = grouped.to_dict(orient="records")
    return gradcam


def single_source(intact: pd.DataFrame, classes: list[str]) -> dict:
    """Test 4, from the intact predictions: accuracy among the classes other than COVID-19 (in the paper's data
    one source, one age group: Kermany's children), and COVID-19 vs the rest (two sources)."""
    others = [c for c in classes if c != COVID]
    rows = intact[intact["label"].isin(others)]
    probs = rows[[prob_column(c) for c in others]].to_numpy()
    predicted = np.array(others)[probs.argmax(axis=1)]
    covid_vs_rest = ((intact["pred"] == COVID) == (intact["label"] == COVID)).mean()
    return {
        "kaggle_3class_accuracy": float((predicted == rows["label"].to_numpy()).mean()),
        "kaggle_images": len(rows),
        "covid_vs_rest_accuracy": float(covid_vs_rest),
        "kaggle_3class_chance": float(rows["label"].value_counts(normalize=True).max()),
    }


def verdicts(results: AuditResults) -> dict[str, str]:
    """One sentence per test that ran, with the thresholds it was judged by, test 6 first."""
    found = {
        "retrained-lungs-removed": _retrained_verdict(results),
        "lungs-removed": _lungs_removed_verdict(results),
        "lungs-only": _lungs_only_verdict(results),
        "acquisition": _acquisition_verdict(results),
        "single-source": _single_source_verdict(results),
        "gradcam": _gradcam_verdict(results),
    }
    return {name: text for name, text in found.items() if text is not None}


def _retrained_verdict(results: AuditResults) -> str | None:
    if "retrained-lungs-removed" not in results.tests:
        return None
    chance = results.chance
    removed = results.tests["retrained-lungs-removed"].accuracy.value
    reference = results.tests["intact-retrained-folds"].accuracy.value
    if removed >= reference - NEAR:
        text = "most of the accuracy does not need the lungs: the labels are readable from outside them"
    elif removed <= chance + ABOVE_CHANCE:
        text = "without the lungs a model learns little: the accuracy comes from the lung field"
    else:
        text = "a large part of the accuracy survives without the lungs"
    return (
        f"Retrained without the lungs: {removed:.3f} vs {reference:.3f} intact on the same folds (chance "
        f"{chance:.3f}); {text} (thresholds: within {NEAR:.2f} of intact, or within {ABOVE_CHANCE:.2f} of chance)."
    )


def _lungs_removed_verdict(results: AuditResults) -> str:
    chance, removed = results.chance, results.tests["lungs-removed"].accuracy.value
    reading = (
        "well above chance: the models read something outside the lungs"
        if removed > chance + ABOVE_CHANCE
        else "near chance"
    )
    return (
        f"Lungs removed at test time: {removed:.3f} (chance {chance:.3f}); {reading} (threshold: chance + "
        f"{ABOVE_CHANCE:.2f}). Occluded films are far from anything the models saw, so this measures robustness "
        "to occlusion as much as shortcut use."
    )


def _lungs_only_verdict(results: AuditResults) -> str:
    intact, only = results.tests["intact"].accuracy.value, results.tests["lungs-only"].accuracy.value
    reading = (
        "the lung field alone carries most of the accuracy"
        if only >= intact - NEAR
        else "the models lose much without the rest of the film"
    )
    return f"Lungs only: {only:.3f} vs {intact:.3f} intact; {reading} (threshold: within {NEAR:.2f} of intact)."


def _acquisition_verdict(results: AuditResults) -> str | None:
    if "acquisition" not in results.tests:
        return None
    acq, intact = results.tests["acquisition"], results.tests["intact"].accuracy.value
    reading = (
        "the labels of this data set can be read without the lungs"
        if acq.accuracy.value >= intact - NEAR
        else "they do not reach CoroNet's accuracy"
    )
    return (
        f"Acquisition features alone: {acq.accuracy.value:.3f}, COVID-19 recall "
        f"{acq.figures['covid_recall'].value:.3f}, vs CoroNet {intact:.3f}; {reading} (threshold: within "
        f"{NEAR:.2f} of CoroNet)."
    )


def _single_source_verdict(results: AuditResults) -> str | None:
    s = results.single_source
    if s is None:
        return None
    return (
        "Among the three Kaggle classes only (one source, one age group) accuracy is "
        f"{s['kaggle_3class_accuracy']:.3f} (chance {s['kaggle_3class_chance']:.3f}); "
        f"COVID-19 vs the rest (two sources) {s['covid_vs_rest_accuracy']:.3f}. "
        "The easy part of the task is the part that is also a change of source."
    )


def _gradcam_verdict(results: AuditResults) -> str | None:
    if results.gradcam is None:
        return None
    return (
        f"{results.gradcam['mean_inside']:.0%} of the Grad-CAM mass lies inside the lung field, which covers "
        f"{results.lung_fraction_of_film:.0%} of the film. Saliency inside the lungs does not prove the absence "
        "of shortcuts (Viviano et al., ICLR 2021)."
    )
