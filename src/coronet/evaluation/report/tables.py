"""The report's Table I tables, written as CSV: Tables III-VI, intervals, AUC, the false COVID-19 rate.

The paper's values stand beside ours where they compare (:mod:`coronet.paper`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from ... import paper
from ...layout import ReportDir, prob_column
from ..bootstrap import bootstrap_ci, bootstrap_cis
from ..metrics import (
    COVID,
    accuracy,
    class_table,
    false_covid_rate_of,
    fold_table,
    precision_of,
    recall_of,
    task_row,
)

#: The paper's reported numbers, as the tables compare with them (:mod:`coronet.paper`).
PAPER = paper.TABLES


@dataclass
class PaperTables:
    """Tables III-VI of a run (with the paper's values beside ours where they compare) and the paper's row."""

    table3: pd.DataFrame
    table4: pd.DataFrame
    table5: pd.DataFrame
    table6: pd.DataFrame | None
    reference: pd.DataFrame | None
    row: str | None


def paper_tables(predictions, classes, task, paper_table, external: bool, out: ReportDir) -> PaperTables:
    """Tables III-V (and VI for dataset-2), written as CSV; an external evaluation has the paper's row only as a
    reference, never beside its own figures."""
    row = task.paper_row if task else None  # its row in the paper's Table V (e.g. "4-class")
    table3 = fold_table(predictions, classes)
    table4 = class_table(predictions, classes)
    table5 = task_row(table3, task)
    table6 = None
    reference = None
    if external:
        reference = paper_reference(row)
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
    return PaperTables(table3, table4, table5, table6, reference, row)


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


def paper_reference(row: str | None) -> pd.DataFrame | None:
    """The paper's Table V row for ``task`` (and Table IV's per-class rows for 4 classes), as a reference."""
    if row not in PAPER["table5"]:
        return None
    rows = {f"{row} (Table V)": PAPER["table5"][row]}
    if row == "4-class":
        rows.update({f"{c} (Table IV)": v for c, v in PAPER["table4"].items()})
    table = pd.DataFrame(rows).T
    table.index.name = "the paper"
    return table


def intervals(predictions, classes, n_bootstrap: int, seed: int, out: ReportDir) -> tuple[dict, pd.DataFrame]:
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


def auc_table(aucs: dict, classes, out: ReportDir) -> pd.DataFrame:
    """The one-vs-rest AUC of each class, in class order (``auc.csv``)."""
    auc = pd.DataFrame({"auc": pd.Series(aucs, dtype=float)}).reindex(classes)
    auc.index.name = "class"
    auc.to_csv(out.table("auc"))
    return auc


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


def false_covid_record(false_covid: pd.DataFrame | None) -> dict | None:
    """The false COVID-19 table as ``summary.json`` records it: per label, the rate, its interval and the films."""
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
