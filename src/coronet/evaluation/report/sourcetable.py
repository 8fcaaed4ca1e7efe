"""The per-source table in the report: written as CSV, shown to a reader, the held-out rows read from it.

The table (:mod:`coronet.evaluation.sources`) covers every evaluated film (``sources.csv``,
``negative-sources.csv``)."""

from __future__ import annotations

import pandas as pd

from ...layout import ReportDir
from ..metrics import COVID
from ..results import Estimate, LeaveOutResult, RunResults
from ..sources import AUC, negative_sources, source_table, worst_phrase


def source_tables(evaluated: pd.DataFrame, n_bootstrap: int, seed: int, out: ReportDir):
    """The per-source table and each negative source's false COVID-19 rate, written as CSV; both returned."""
    by_source = source_table(evaluated, n=n_bootstrap, seed=seed)
    by_source.to_csv(out.table("sources"), index=False)
    negatives = negative_sources(evaluated, n=n_bootstrap, seed=seed)
    negatives.to_csv(out.table("negative-sources"), index=False)
    return by_source, negatives


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


def by_source_section(results: RunResults, by_source: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The per-source table under its title, which names the worst negative source."""
    return {
        "By source: each (source, label) of the evaluated films (Table I and every extra cohort), the share "
        "called COVID-19 and the recall of its own label, 95% CIs over patients; "
        + worst_phrase(results.worst): source_display(by_source)
    }


def held_out_section(results: RunResults, by_source: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The held-out collection's rows of the per-source table under their title; none where nothing was left
    out."""
    if not results.leave_out:
        return {}
    return {
        f"Held-out collection {results.leave_out.source}: no fold model trained or validated on its films; each "
        "was predicted by the model of its own fold (95% CIs over patients)": source_display(
            pd.DataFrame(results.leave_out.rows, columns=by_source.columns)
        )
    }


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
