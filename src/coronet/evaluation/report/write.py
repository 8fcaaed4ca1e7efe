"""``write_report``: a run's report computed and written: its films, tables, figures, summary.json, page."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ...data.cohorts import extra_rows, table1_rows
from ...layout import ReportDir, RunDir, classes_of, prob_column, read_predictions
from ...tasks import task_of
from ..figures import (
    load_sample_images,
    plot_calibration,
    plot_confusion,
    plot_prediction_grid,
    plot_roc,
    sample_predictions,
)
from ..metrics import (
    COVID,
    confusion,
    covid_operating_point,
    expected_calibration_error,
    fold_confusion,
    folds_of,
    roc_aucs,
)
from ..pages import write_page
from ..results import Estimate, RunResults
from ..sources import source_summary
from .cohorts import cohort_predictions, cohort_results
from .page import report_page, report_tables, report_title
from .sourcetable import leave_out_result, source_tables
from .tables import auc_table, false_covid_record, false_covid_table, intervals, paper_tables


def write_report(run_dir, out=None, n_bootstrap: int = 1000, seed: int = 0) -> RunResults:
    """Write the report for ``run_dir`` into ``out`` (default ``run_dir/report``); return its results."""
    run_dir = Path(run_dir)
    out = ReportDir(out) if out is not None else RunDir(run_dir).report
    out.path.mkdir(parents=True, exist_ok=True)
    films = Films.read(run_dir)
    predictions = films.table1
    classes = classes_of(predictions)
    task = task_of(classes)
    config = run_config(run_dir)
    # an external evaluation is not a cross-validation: the paper's figures appear only as a labelled reference
    external = config.get("kind") == "evaluate"
    paper = paper_tables(predictions, classes, task, config.get("paper_table"), external, out)

    cis, ci = intervals(predictions, classes, n_bootstrap, seed, out)
    aucs = roc_aucs(predictions, classes)
    auc = auc_table(aucs, classes, out)
    ece = expected_calibration_error(predictions, classes)
    false_covid = false_covid_table(predictions, n=n_bootstrap, seed=seed)
    if false_covid is not None:
        false_covid.to_csv(out.table("false-covid"))
    cohorts = cohort_results(
        films.cohorts if COVID in classes else {}, classes, set(extra_rows(films.every)), n_bootstrap, seed, out
    )
    by_source, negatives = source_tables(films.evaluated(), n_bootstrap, seed, out)
    figures = report_figures(predictions, classes, aucs, ece, seed, out)
    held = films.held_out
    leave_out = leave_out_result(held, by_source, n_bootstrap, seed) if held is not None else None

    results = RunResults(
        run=run_dir.resolve().name,
        task=task.name if task else None,
        classes=classes,
        n_images=int(len(predictions)),
        n_patients=int(predictions["patient_id"].nunique()),
        n_bootstrap=n_bootstrap,
        accuracy=Estimate.of(cis["accuracy"]),
        covid_recall=Estimate.of(cis[f"recall_{COVID}"]) if COVID in classes else None,
        auc=aucs,
        ece=ece,
        covid_operating_point=covid_operating_point(predictions) if COVID in classes else None,
        false_covid=false_covid_record(false_covid),
        folds=[int(f) for f in folds_of(predictions)],
        cohorts=cohorts[0],
        sources=source_summary(by_source, negatives),
        films_per_label=films_per_label(predictions, classes),
        title=report_title(run_dir, config),
        leave_out=leave_out,
    )
    out.summary.write_text(json.dumps(results.to_json(), indent=2) + "\n")
    tables = report_tables(paper, external, false_covid, results, by_source, cohorts, out)
    write_page(report_page(run_dir, results, tables, ci, auc, figures), out.markdown, out.html)
    return results


@dataclass
class Films:
    """A run's evaluated films, each predicted by a model that never trained on it."""

    every: pd.DataFrame  # the run's predictions.csv
    # the paper's tables are about its Table I data only; extra cohorts (coronet.data.cohorts) and a held-out
    # collection get sections of their own and, with every other film, the per-source table
    table1: pd.DataFrame
    cohorts: dict[str, pd.DataFrame]
    held_out: pd.DataFrame | None  # RUN/leave-out/predictions.csv, marked ``held_out``

    @classmethod
    def read(cls, run_dir: Path) -> Films:
        """The films of ``run_dir``: its predictions, each extra cohort's and a held-out collection's."""
        every = RunDir(run_dir).read_predictions()
        held = RunDir(run_dir).leave_out
        held_out = read_predictions(held).assign(held_out=True) if held.is_file() else None
        return cls(every, table1_rows(every), cohort_predictions(run_dir, every), held_out)

    def evaluated(self) -> pd.DataFrame:
        """Every evaluated film: the Table I rows, each cohort's, the held-out collection's."""
        extra = [self.held_out] if self.held_out is not None else []
        return pd.concat([self.table1, *self.cohorts.values(), *extra]).reset_index(drop=True)


def report_figures(predictions, classes, aucs, ece, seed: int, out: ReportDir) -> dict[str, Path]:
    """Confusion matrices (per fold and pooled), ROC, calibration and the Fig. 8 sample grid."""
    figures = {}
    for fold in folds_of(predictions):
        figures[f"confusion, fold {fold}"] = plot_confusion(
            fold_confusion(predictions, classes, fold), classes, f"fold {fold}", out.figure(f"confusion-fold-{fold}")
        )
    pooled_cm = confusion(predictions["label"], predictions["pred"], classes)
    figures["confusion, pooled"] = plot_confusion(pooled_cm, classes, "all folds", out.figure("confusion-pooled"))
    figures["ROC"] = plot_roc(predictions, classes, aucs, out.figure("roc"))
    figures["calibration"] = plot_calibration(predictions, classes, ece, out.figure("calibration"))
    images, shown = load_sample_images(sample_predictions(predictions, classes, seed=seed))
    if images:
        figures["sample predictions (Fig. 8)"] = plot_prediction_grid(
            images,
            classes,
            shown[[prob_column(c) for c in classes]].to_numpy(),
            out.figure("samples"),
            true_labels=list(shown["label"]),
            names=list(shown["path"]),
        )
    return figures


def films_per_label(predictions: pd.DataFrame, classes: list[str]) -> dict[str, int]:
    """Films per label, in the model's class order (any other label after, alphabetically)."""
    counts = predictions["label"].value_counts()
    order = sorted(counts.index, key=lambda c: (classes.index(c) if c in classes else len(classes), str(c)))
    return {str(label): int(counts[label]) for label in order}


def run_config(run_dir: Path) -> dict:
    """The run's ``config.json``; empty where it is missing or unreadable (a report of bare predictions)."""
    path = RunDir(run_dir).config
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}
