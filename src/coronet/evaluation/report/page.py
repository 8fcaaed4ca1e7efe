"""The report as a page: its title, its tables in order, intervals, AUC, calibration, figures, training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...layout import ReportDir, RunDir
from ..metrics import ECE_BINS
from ..pages import Figure, Page, Section, Table, Text
from ..results import CohortResult, RunResults
from .cohorts import cohort_sections
from .sourcetable import by_source_section, held_out_section
from .tables import PaperTables
from .words import operating_point_text, summary_sentence

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


def report_tables(
    paper_tables: PaperTables,
    external: bool,
    false_covid: pd.DataFrame | None,
    results: RunResults,
    by_source: pd.DataFrame,
    cohorts: tuple[dict[str, CohortResult], dict[str, pd.DataFrame]],
    out: ReportDir,
) -> dict[str, pd.DataFrame]:
    """The page's tables by title, in order: the paper's (or an evaluation's overall and per class), the false
    COVID-19 rate, the per-source table, each extra cohort's, the held-out collection's."""
    tables = paper_sections(paper_tables, external, out)
    if false_covid is not None:
        tables["False COVID-19 rate: films of each other label called COVID-19 (95% CI over patients)"] = false_covid
    tables.update(by_source_section(results, by_source))
    tables.update(cohort_sections(*cohorts))
    tables.update(held_out_section(results, by_source))
    return tables


def paper_sections(paper_tables: PaperTables, external: bool, out: ReportDir) -> dict[str, pd.DataFrame]:
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


def report_page(run_dir: Path, results: RunResults, tables, ci, auc, figures: dict[str, Path]) -> Page:
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
                Text(f"COVID-19 operating point: {operating_point_text(results.covid_operating_point)}"),
            ],
        ),
        Section("Figures", [Figure(path, name) for name, path in figures.items()]),
    ]
    training, curves = training_tables(run_dir)
    if training is not None or curves:
        blocks: list = [Table(training)] if training is not None else []
        blocks += [Figure(path, f"{name} curves") for name, path in curves.items()]
        sections.append(Section("Training (last epoch per fold)", blocks))
    return Page(results.title, sections)


def training_tables(run_dir: Path) -> tuple[pd.DataFrame | None, dict]:
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
