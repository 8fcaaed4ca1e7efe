"""Evaluation report for a cross-validation run: the paper's tables, intervals and figures.

Input is a run directory holding ``predictions.csv`` (columns ``path, patient_id, fold, label``,
one ``prob_<class>`` column per class in class order, ``pred``, maybe more) and optionally
``fold-K/metrics.csv`` and ``fold-K/curves.png``.  :func:`write_report` writes into
``RUN_DIR/report/``:

* ``table3.csv`` / ``table4.csv`` -- the paper's Table III (per fold, macro P/R/Spec/F1 and accuracy)
  and Table IV (per class, mean over folds), in percent, with the paper's values and our difference
  beside ours when the run's classes are the paper's four;
* ``table5.csv`` -- the paper's Table V row for the run's task (4-class, 3-class, binary; recognised
  from the class names, see ``coronet.tasks``), with the paper's row beside it;
* ``table6.csv`` -- for a dataset-2 3-class run (``config.json`` says ``"paper_table": "table6"``),
  Table IV's per-class figures and the accuracy beside the paper's Table VI;
* ``ci.csv`` -- 95 % bootstrap intervals (patients resampled, all their images come along) for the
  accuracy and each class's recall and precision;
* ``auc.csv`` -- one-vs-rest ROC AUC per class; ``summary.json`` -- the returned summary;
* ``sources.csv`` -- every evaluated film by (source, label): Table I, the extra cohorts and a held-out
  collection (``RUN/leave-out/predictions.csv``, :mod:`coronet.data.leaveout`), which also gets a section;
* ``confusion-fold-K.png`` per fold, ``confusion-pooled.png``, ``roc.png``, ``calibration.png``,
  ``samples.png`` (the paper's Fig. 8: validation images with true label and probabilities; drawn
  from the ``path`` column, so only where the images are still readable);
* ``report.md`` and ``report.html`` (one self-contained page, figures embedded as data URIs).

Precision, recall and F1 come from scikit-learn's definitions (0 where undefined); specificity,
which scikit-learn lacks, is TN / (TN + FP) from the one-vs-rest confusion matrix.

Research software, not a medical device.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paper
from ..data.cohorts import COHORTS, extra_rows, table1_rows
from ..layout import ReportDir, RunDir, classes_of, prob_column, read_predictions
from ..tasks import task_of
from .bootstrap import bootstrap_ci, bootstrap_cis
from .figures import (
    load_sample_images,
    plot_calibration,
    plot_confusion,
    plot_prediction_grid,
    plot_roc,
    sample_predictions,
)
from .metrics import (
    COVID,
    ECE_BINS,
    accuracy,
    class_table,
    confusion,
    covid_operating_point,
    expected_calibration_error,
    false_covid_rate_of,
    fold_confusion,
    fold_table,
    folds_of,
    precision_of,
    recall_of,
    roc_aucs,
    task_row,
)
from .pages import Figure, Page, Section, Table, Text, write_page
from .results import CohortResult, Estimate, LeaveOutResult, RunResults
from .sources import (
    AUC,
    allowed_predictions,
    called_covid,
    negative_sources,
    source_summary,
    source_table,
    worst_phrase,
)

#: The paper's reported numbers, as the tables compare with them (:mod:`coronet.paper`).
PAPER = paper.TABLES


def with_paper(table: pd.DataFrame, paper: dict) -> pd.DataFrame:
    """Interleave ``<m>``, ``<m>_paper`` and ``<m>_diff`` (ours minus paper) for the paper's metrics."""
    paper_df = pd.DataFrame(paper).T.reindex(table.index)
    cols = {}
    for m in table.columns:
        cols[m] = table[m]
        if m in paper_df.columns:
            cols[f"{m}_paper"] = paper_df[m]
            cols[f"{m}_diff"] = table[m] - paper_df[m]
    return pd.DataFrame(cols, index=table.index)


def false_covid_table(predictions: pd.DataFrame, n: int = 1000, seed: int = 0) -> pd.DataFrame | None:
    """Per label other than COVID-19: films, patients, the share called COVID-19 and its 95 % interval
    (patients resampled). None when the model has no COVID-19 class or the data no other label."""
    if prob_column(COVID) not in predictions or not (predictions["label"] != COVID).any():
        return None
    rows = []
    for label in sorted(set(predictions["label"]) - {COVID}, key=str):
        part = predictions[predictions["label"] == label]
        point, low, high = bootstrap_ci(part, false_covid_rate_of(label), n=n, seed=seed)
        rows.append(
            {
                "label": label,
                "images": len(part),
                "patients": int(part["patient_id"].nunique()),
                "false covid rate": point,
                "95% CI low": low,
                "95% CI high": high,
            }
        )
    return pd.DataFrame(rows).set_index("label")


def cohort_predictions(run_dir: str | os.PathLike, predictions: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """Each extra cohort's predictions for a run: its own rows of that cohort, else its cohort test's file."""
    run = RunDir(run_dir)
    if predictions is None:
        predictions = pd.read_csv(run.predictions)
    found = extra_rows(predictions)
    for cohort in COHORTS.values():
        path = run.cohort_test(cohort.test_dir)
        if cohort.name not in found and path.is_file():
            found[cohort.name] = pd.read_csv(path)
    return found


def cohort_summary(
    rows: pd.DataFrame, classes, n: int = 1000, seed: int = 0, trained_with: bool = False, title: str = ""
) -> CohortResult:
    """An extra cohort's figures: for its films without COVID-19 the false COVID-19 rate per label and over all,
    for its COVID-19 films (``radiography``) ``covid_recall``, and ``label_accuracy`` (each film's answer right
    for its own label, a partial label's classes counting), each with a 95 % interval over the cohort's
    patients."""
    negatives = sorted(set(rows["label"]) - {COVID})
    stats: dict[str, Callable[[pd.DataFrame], float]] = {
        f"false_covid_{label}": false_covid_rate_of(label) for label in negatives
    }
    if negatives:
        stats["false_covid_all"] = lambda df: called_covid(df[df["label"] != COVID])
    if (rows["label"] == COVID).any():
        stats["covid_recall"] = recall_of(COVID)
    right = {label: allowed_predictions(label, classes) for label in set(rows["label"])}
    stats["label_accuracy"] = lambda df: (
        float(np.mean([p in right[label] for label, p in zip(df["label"], df["pred"])])) if len(df) else float("nan")
    )
    cis = bootstrap_cis(rows, stats, n=n, seed=seed)
    return CohortResult(
        n_images=int(len(rows)),
        n_patients=int(rows["patient_id"].nunique()),
        figures={name: Estimate.of(triple) for name, triple in cis.items()},
        counts={label: int((rows["label"] == label).sum()) for label in sorted(set(rows["label"]))},
        trained_with=trained_with,
        title=title,
    )


def summary_sentence(results: RunResults) -> str:
    """One sentence with the key figures and their 95 % intervals."""

    def figure(estimate: Estimate | None, name: str) -> str | None:
        if estimate is None:
            return None
        return f"{name} {estimate.value:.3f} (95% CI {estimate.low:.3f}-{estimate.high:.3f})"

    parts = [p for p in (figure(results.accuracy, "accuracy"), figure(results.covid_recall, "COVID-19 recall")) if p]
    if results.adult:
        parts.append(adult_phrase(results.adult, percent=True))
    if results.sources:
        parts.append(worst_phrase(results.worst, percent=True))
    if results.leave_out:
        parts.append(leave_out_phrase(results.leave_out))
    where = f"On {results.n_images} films of {results.n_patients} patients"
    sentence = where + (": " + "; ".join(parts) if parts else "") + ". Intervals: bootstrap over patients."
    return sentence + (f" {single_label_note(results)}" if results.single_label else "")


def _films_per_label(predictions: pd.DataFrame, classes: list[str]) -> dict[str, int]:
    """Films per label, in the model's class order (any other label after, alphabetically)."""
    counts = predictions["label"].value_counts()
    order = sorted(counts.index, key=lambda c: (classes.index(c) if c in classes else len(classes), str(c)))
    return {str(label): int(counts[label]) for label in order}


def single_label_note(results: RunResults) -> str:
    """What a run whose films all have one label can and cannot say (e.g. dataset-2 without overlap under
    --adult-negatives, where every negative film was a training film)."""
    return (
        f"All {results.n_images} films are {results.single_label}: the accuracy is that class's recall, and "
        "nothing is measured about the other classes."
    )


def adult_phrase(adult: CohortResult, percent: bool) -> str:
    """The adult-negative test in words: the share of adult films without COVID-19 called COVID-19, with its CI."""
    rate = adult.false_covid_all
    if percent:
        return (
            f"{rate.value:.1%} of {adult.n_images} adult films without COVID-19 called COVID-19 "
            f"(95% CI {rate.low:.1%}-{rate.high:.1%})"
        )
    return (
        f"adult films called covid {rate.value:.4f} (95% CI {rate.low:.2f}-{rate.high:.2f}, {adult.n_images} adult "
        f"films without COVID-19, bootstrap over {adult.n_patients} patients)"
    )


def leave_out_phrase(held: LeaveOutResult, percent: bool = True) -> str:
    """The held-out collection's test in words: its COVID-19 recall, its AUC against the reference negatives, its
    other films' false COVID-19 rate, each with its 95 % interval."""

    def figure(name: str, estimate: Estimate | None, share: bool) -> str | None:
        if estimate is None:
            return None
        if share and percent:
            return f"{name} {estimate.value:.1%} (95% CI {estimate.low:.1%}-{estimate.high:.1%})"
        return f"{name} {estimate.value:.3f} (95% CI {estimate.low:.2f}-{estimate.high:.2f})"

    parts = [
        figure("COVID-19 recall", held.covid_recall, share=True),
        figure(AUC.replace("auc", "AUC"), held.auc, share=False),
        figure("films without COVID-19 called COVID-19", held.false_covid, share=True),
    ]
    return f"held-out collection {held.source} ({held.n_images} films no model trained on): " + "; ".join(
        p for p in parts if p
    )


def summary_lines(results: RunResults, patients: bool = True) -> list[str]:
    """The lines the CLI prints: accuracy and COVID-19 recall with their 95 % intervals (``patients``: naming
    how many patients the bootstrap resampled), the adult films' false COVID-19 rate where the run has an
    adult-negative test, and the worst negative source where the films have sources."""
    tail = f", bootstrap over {results.n_patients} patients)" if patients else ")"
    lines = []
    for estimate, name in ((results.accuracy, "accuracy"), (results.covid_recall, "covid recall")):
        if estimate is None:
            lines.append(f"{name} n/a")
        else:
            lines.append(f"{name} {estimate.value:.4f} (95% CI {estimate.low:.2f}-{estimate.high:.2f}{tail}")
    if results.adult:
        lines.append(adult_phrase(results.adult, percent=False))
    if results.sources:
        lines.append(worst_phrase(results.worst, percent=False))
    if results.leave_out:
        lines.append(leave_out_phrase(results.leave_out, percent=False))
    return lines


def _training_tables(run_dir: Path) -> tuple[pd.DataFrame | None, dict]:
    """Last row of each ``fold-K/metrics.csv`` and the paths of existing ``fold-K/curves.png``."""
    last, curves = {}, {}
    for fold in RunDir(run_dir).folds():
        if fold.metrics.is_file():
            df = pd.read_csv(fold.metrics)
            if len(df):
                last[fold.path.name] = df.iloc[-1]
        if fold.curves.is_file():
            curves[fold.path.name] = fold.curves
    table = pd.DataFrame(last).T if last else None
    if table is not None:
        table.index.name = "fold"
    return table, curves


def write_report(run_dir, out=None, n_bootstrap: int = 1000, seed: int = 0) -> RunResults:
    """Write the report for ``run_dir`` into ``out`` (default ``run_dir/report``); return its results."""
    run_dir = Path(run_dir)
    out = ReportDir(out) if out is not None else RunDir(run_dir).report
    out.path.mkdir(parents=True, exist_ok=True)
    every = RunDir(run_dir).read_predictions()
    # the paper's tables are about its Table I data only; extra cohorts (coronet.data.cohorts) and a held-out
    # collection get sections of their own and, with every other film, the per-source table
    predictions = table1_rows(every)
    cohorts = cohort_predictions(run_dir, every)
    held = RunDir(run_dir).leave_out
    held_out = read_predictions(held).assign(held_out=True) if held.is_file() else None
    classes = classes_of(predictions)
    task = task_of(classes)
    config = _run_config(run_dir)
    # an external evaluation is not a cross-validation: the paper's figures appear only as a labelled reference
    external = config.get("kind") == "evaluate"
    paper_tables = _paper_tables(predictions, classes, task, config.get("paper_table"), external, out)

    cis, ci = _intervals(predictions, classes, n_bootstrap, seed, out)
    aucs = roc_aucs(predictions, classes)
    auc = pd.DataFrame({"auc": pd.Series(aucs, dtype=float)}).reindex(classes)
    auc.index.name = "class"
    auc.to_csv(out.table("auc"))
    ece = expected_calibration_error(predictions, classes)
    false_covid = false_covid_table(predictions, n=n_bootstrap, seed=seed)
    if false_covid is not None:
        false_covid.to_csv(out.table("false-covid"))
    cohort_results, cohort_tables = _cohort_results(
        cohorts if COVID in classes else {}, classes, set(extra_rows(every)), n_bootstrap, seed, out
    )
    # every evaluated film, each by a model that never trained on it: the Table I rows, each cohort's, the held-out
    evaluated = pd.concat([predictions, *cohorts.values(), *([held_out] if held_out is not None else [])])
    evaluated = evaluated.reset_index(drop=True)
    by_source = source_table(evaluated, n=n_bootstrap, seed=seed)
    by_source.to_csv(out.table("sources"), index=False)
    negatives = negative_sources(evaluated, n=n_bootstrap, seed=seed)
    negatives.to_csv(out.table("negative-sources"), index=False)
    figures = _figures(predictions, classes, aucs, ece, seed, out)

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
        false_covid=_false_covid_record(false_covid),
        folds=[int(f) for f in folds_of(predictions)],
        cohorts=cohort_results,
        sources=source_summary(by_source, negatives),
        films_per_label=_films_per_label(predictions, classes),
        title=report_title(run_dir, config),
        leave_out=leave_out_result(held_out, by_source, n_bootstrap, seed) if held_out is not None else None,
    )
    out.summary.write_text(json.dumps(results.to_json(), indent=2) + "\n")

    tables = _report_sections(paper_tables, external, out)
    if false_covid is not None:
        tables["False COVID-19 rate: films of each other label called COVID-19 (95% CI over patients)"] = false_covid
    tables[
        "By source: each (source, label) of the evaluated films (Table I and every extra cohort), the share "
        "called COVID-19 and the recall of its own label, 95% CIs over patients; " + worst_phrase(results.worst)
    ] = source_display(by_source)
    tables.update(_cohort_sections(cohort_results, cohort_tables))
    if results.leave_out:
        tables[
            f"Held-out collection {results.leave_out.source}: no fold model trained or validated on its films; each "
            "was predicted by the model of its own fold (95% CIs over patients)"
        ] = source_display(pd.DataFrame(results.leave_out.rows, columns=by_source.columns))
    write_page(_report_page(run_dir, results, tables, ci, auc, figures), out.markdown, out.html)
    return results


def leave_out_result(held: pd.DataFrame, by_source: pd.DataFrame, n: int = 1000, seed: int = 0) -> LeaveOutResult:
    """The held-out collection's figures: its rows of the per-source table ``by_source`` (computed with the held
    films among the evaluated ones, marked ``held out``) and its false COVID-19 rate over its films without
    COVID-19."""
    rows = by_source[by_source["held out"].astype(bool)]
    covid = rows[rows["label"] == COVID]

    def estimate(name: str) -> Estimate | None:
        if covid.empty or pd.isna(covid[name].iloc[0]):
            return None
        row = covid.iloc[0]
        return Estimate(float(row[name]), float(row[f"{name} low"]), float(row[f"{name} high"]))

    negatives = negative_sources(held, n=n, seed=seed)
    false_covid = (
        Estimate(*(float(negatives[c].iloc[0]) for c in ("false covid", "false covid low", "false covid high")))
        if len(negatives)
        else None
    )
    return LeaveOutResult(
        source=str(held["source"].iloc[0]) if len(held) else "",
        n_images=int(len(held)),
        n_patients=int(held["patient_id"].nunique()),
        covid_recall=estimate("called covid"),
        false_covid=false_covid,
        auc=estimate(AUC),
        rows=rows.astype(object).where(rows.notna(), None).to_dict("records"),
    )


@dataclass
class _PaperTables:
    """Tables III-VI of a run (with the paper's values beside ours where they compare) and the paper's row."""

    table3: pd.DataFrame
    table4: pd.DataFrame
    table5: pd.DataFrame
    table6: pd.DataFrame | None
    reference: pd.DataFrame | None
    row: str | None


def _paper_tables(predictions, classes, task, paper_table, external: bool, out: ReportDir) -> _PaperTables:
    """Tables III-V (and VI for dataset-2), written as CSV; an external evaluation has the paper's row only as a
    reference, never beside its own figures."""
    row = task.paper_row if task else None  # its row in the paper's Table V (e.g. "4-class")
    table3 = fold_table(predictions, classes)
    table4 = class_table(predictions, classes)
    table5 = task_row(table3, task)
    table6 = None
    reference = None
    if external:
        reference = _paper_reference(row)
    elif row == "4-class":
        table3 = with_paper(table3, PAPER["table3"])
        table4 = with_paper(table4, PAPER["table4"])
    if not external and paper_table == "table6" and row == "3-class":
        table6 = table4.copy()
        table6.loc["accuracy", "accuracy"] = table3.loc["mean", "accuracy"]
        table6 = with_paper(
            table6, {**{c: PAPER["table6"][c] for c in classes}, "accuracy": {"accuracy": PAPER["table6"]["accuracy"]}}
        )
        table6.to_csv(out.table("table6"))
    elif not external and row in PAPER["table5"]:
        table5 = with_paper(table5, PAPER["table5"])
    table3.to_csv(out.table("table3"))
    table4.to_csv(out.table("table4"))
    table5.to_csv(out.table("table5"))
    return _PaperTables(table3, table4, table5, table6, reference, row)


def _intervals(predictions, classes, n_bootstrap: int, seed: int, out: ReportDir) -> tuple[dict, pd.DataFrame]:
    """Accuracy, and each class's recall and precision, with 95% intervals over patients (``ci.csv``)."""
    stats: dict[str, Callable[[pd.DataFrame], float]] = {"accuracy": accuracy}
    for c in classes:
        stats[f"recall_{c}"] = recall_of(c)
        stats[f"precision_{c}"] = precision_of(c)
    cis = bootstrap_cis(predictions, stats, n=n_bootstrap, seed=seed)
    ci = pd.DataFrame(cis, index=["point", "low", "high"]).T
    ci.index.name = "statistic"
    ci["n_patients"] = int(predictions["patient_id"].nunique())
    ci["n_bootstrap"] = n_bootstrap
    ci.to_csv(out.table("ci"))
    return cis, ci


def _cohort_results(cohorts, classes, trained_with, n_bootstrap: int, seed: int, out: ReportDir):
    """Each extra cohort's figures and its false-COVID table (``<cohort>-false-covid.csv``)."""
    results: dict[str, CohortResult] = {}
    tables: dict[str, pd.DataFrame] = {}
    for name, rows in cohorts.items():
        title = COHORTS[name].title if name in COHORTS else name
        results[name] = cohort_summary(
            rows, classes, n=n_bootstrap, seed=seed, trained_with=name in trained_with, title=title
        )
        table = false_covid_table(rows, n=n_bootstrap, seed=seed)
        if table is not None or not (rows["label"] == COVID).any():
            tables[name] = table if table is not None else pd.DataFrame()
            tables[name].to_csv(out.table(f"{name}-false-covid"))
        else:  # a cohort of COVID-19 films: its recall and AUC, as the per-source table gives them
            tables[name] = source_display(source_table(rows, n=n_bootstrap, seed=seed))
    return results, tables


def _figures(predictions, classes, aucs, ece, seed: int, out: ReportDir) -> dict[str, Path]:
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


def _false_covid_record(false_covid: pd.DataFrame | None) -> dict | None:
    if false_covid is None:
        return None
    return {
        label: {
            "rate": row["false covid rate"],
            "ci": [row["95% CI low"], row["95% CI high"]],
            "images": int(row["images"]),
        }
        for label, row in false_covid.iterrows()
    }


def _report_sections(paper_tables: _PaperTables, external: bool, out: ReportDir) -> dict[str, pd.DataFrame]:
    """The report's first tables: the paper's (a cross-validation) or overall and per class (an evaluation)."""
    t = paper_tables
    if external:
        tables = {
            "Overall (percent): class-averaged precision, recall, specificity, F1; accuracy": t.table3.loc[
                ["mean"]
            ].rename(index={"mean": "all"}),
            "Per class (percent)": t.table4,
        }
        if t.reference is not None:
            t.reference.to_csv(out.table("paper-reference"))
            tables[
                "The paper's figures, for reference only: its 4-fold cross-validation on its own images, "
                "not this data (not comparable)"
            ] = t.reference
    else:
        tables = {
            "Table III: per fold (percent)": t.table3,
            "Table IV: per class, mean over folds (percent)": t.table4,
            f"Table V: the {t.row or 'task'} row (fold means, percent)": t.table5,
        }
    if t.table6 is not None:
        tables["Table VI: dataset-2, per class and accuracy (percent)"] = t.table6
    return tables


def _cohort_sections(results: dict[str, CohortResult], tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    sections = {}
    for name, cohort in results.items():
        how = (
            "held-out films of each fold (the models trained on the other folds' films of this cohort)"
            if cohort.trained_with
            else "films none of the models saw in training"
        )
        right = cohort.label_accuracy
        what = "COVID-19 recall" if cohort.covid_recall else "false COVID-19 rate"
        sections[
            f"Cohort {name}: {cohort.title}; {how}; {what} "
            f"(own-label accuracy {right.value:.3f}, 95% CI {right.low:.3f}-{right.high:.3f})"
        ] = tables[name]
    return sections


def source_display(by_source: pd.DataFrame) -> pd.DataFrame:
    """The source table as a reader sees it: each figure with its interval in one cell, percent."""

    def cell(row, name):
        value, low, high = row[name], row[f"{name} low"], row[f"{name} high"]
        return "" if pd.isna(value) else f"{value:.1%} ({low:.1%}-{high:.1%})"

    def ranked(row) -> str:
        value = row.get(AUC)
        if value is None or pd.isna(value):
            return ""
        return f"{value:.3f} ({row[f'{AUC} low']:.2f}-{row[f'{AUC} high']:.2f})"

    shown = by_source[["source", "label", "cohort", "images", "patients"]].copy()
    if "held out" in by_source and by_source["held out"].astype(bool).any():
        shown.insert(3, "held out", ["yes" if held else "" for held in by_source["held out"].astype(bool)])
    shown["called COVID-19 (95% CI)"] = [cell(row, "called covid") for _, row in by_source.iterrows()]
    shown["recall of own label (95% CI)"] = [cell(row, "recall") for _, row in by_source.iterrows()]
    if AUC in by_source and by_source[AUC].notna().any():
        shown[f"AUC of prob_covid vs {AUC.removeprefix('auc vs ')} films (95% CI)"] = [
            ranked(row) for _, row in by_source.iterrows()
        ]
    return shown.set_index("source")


#: Profiles whose runs only check that the pipeline works.
PIPELINE_CHECK_PROFILES = ("quick", "tiny")


def report_title(run_dir: Path, config: dict) -> str:
    """The page title: what the run is (an external evaluation, a pipeline check, or a cross-validation)."""
    name = Path(run_dir).resolve().name
    if config.get("kind") == "evaluate":
        return f"External evaluation on {config.get('data', 'other data')} ({name})"
    profile = str(config.get("profile") or "").removeprefix("finetune-")
    if profile in PIPELINE_CHECK_PROFILES:
        return f"Pipeline check, not a result ({profile} profile): {name}"
    return f"Cross-validation report: {name}"


def _paper_reference(row: str | None) -> pd.DataFrame | None:
    """The paper's Table V row for ``task`` (and Table IV's per-class rows for 4 classes), as a reference."""
    if row not in PAPER["table5"]:
        return None
    rows = {f"{row} (Table V)": PAPER["table5"][row]}
    if row == "4-class":
        rows.update({f"{c} (Table IV)": v for c, v in PAPER["table4"].items()})
    table = pd.DataFrame(rows).T
    table.index.name = "the paper"
    return table


def _run_config(run_dir: Path) -> dict:
    path = RunDir(run_dir).config
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}


def _op_text(op: dict | None) -> str:
    if op is None:
        return "not available (no COVID-19 class or only one label value)"
    return (
        f"threshold {op['threshold']:.4f} on prob_covid gives COVID-19 recall {op['recall']:.4f} "
        f"(target >= {op['target_recall']}) at specificity {op['specificity']:.4f}"
    )


def _report_page(run_dir: Path, results: RunResults, tables, ci, auc, figures: dict[str, Path]) -> Page:
    """The report as a page: summary, the tables, intervals, AUC and calibration, figures, training."""
    sections = [
        Section(
            "Summary",
            [Text(summary_sentence(results), lead=True), Text(f"Classes: {', '.join(results.classes)}.")],
        ),
        *[Section(title, [Table(table)]) for title, table in tables.items()],
        Section("95% bootstrap intervals (patients resampled)", [Table(ci)]),
        Section(
            "ROC AUC (one-vs-rest) and calibration",
            [
                Table(auc),
                Text(f"Expected calibration error ({ECE_BINS} bins, max probability): {results.ece:.4f}"),
                Text(f"COVID-19 operating point: {_op_text(results.covid_operating_point)}"),
            ],
        ),
        Section("Figures", [Figure(path, name) for name, path in figures.items()]),
    ]
    training, curves = _training_tables(run_dir)
    if training is not None or curves:
        blocks: list = [Table(training)] if training is not None else []
        blocks += [Figure(path, f"{name} curves") for name, path in curves.items()]
        sections.append(Section("Training (last epoch per fold)", blocks))
    return Page(results.title, sections)
