"""Per-source figures: does the model see the disease, or the collection a film came from?

In the paper's data each label comes from one collection (COVID-19: ieee8023; the rest: Kermany
et al.'s children's films), so a model can score well by recognising the collection. The figures
that expose it (DeGrave et al. 2021, Zech et al. 2018) are per source: how often the films of
each negative collection are called COVID-19, and how well each collection's films are recognised.

Input is a predictions table (:func:`coronet.layout.read_predictions`) with a ``source`` column
(tables without one count as one source, ``unknown``); extra cohorts' rows
(:mod:`coronet.data.cohorts`) are ordinary rows here. Intervals are 95 % bootstrap intervals over
patients (:mod:`coronet.evaluation.bootstrap`).
"""

from __future__ import annotations

import pandas as pd

from ..data.cohorts import cohort_column
from ..layout import classes_of, prob_column
from ..tasks import PARTIAL_LABELS
from .bootstrap import bootstrap_cis
from .metrics import COVID
from .results import Estimate, SourceResults, WorstSource

#: Columns of :func:`source_table`.
SOURCE_COLUMNS = [
    "source",
    "label",
    "cohort",
    "images",
    "patients",
    "called covid",
    "called covid low",
    "called covid high",
    "recall",
    "recall low",
    "recall high",
]


def allowed_predictions(label: str, classes) -> list[str]:
    """The predictions that are right for a film of ``label``: the class itself, or the classes a partial
    label allows (``pneumonia``: bacterial or viral); empty when the model's classes cannot express it."""
    classes = list(classes)
    if label in classes:
        return [label]
    partial = PARTIAL_LABELS.get(label)
    return (partial.allowed(classes) or []) if partial else []


def called_covid(df: pd.DataFrame) -> float:
    """Statistic: the share of films called COVID-19 (nan for no films)."""
    return float((df["pred"] == COVID).mean()) if len(df) else float("nan")


def _recall_of(label: str, classes):
    right = allowed_predictions(label, classes)

    def stat(df: pd.DataFrame) -> float:
        return float(df["pred"].isin(right).mean()) if len(df) and right else float("nan")

    return stat


def _sources(predictions: pd.DataFrame) -> pd.Series:
    return (
        predictions["source"].fillna("unknown") if "source" in predictions else pd.Series("unknown", predictions.index)
    )


def source_table(predictions: pd.DataFrame, n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """One row per (source, label) of the evaluated films (:data:`SOURCE_COLUMNS`).

    ``called covid``: the share called COVID-19 (for COVID-19 films, their recall); ``recall``: the
    share given a right answer for their own label (a partial label's allowed classes count as
    right). Each with its 95 % interval over the cohort's patients. Rows are ordered by source,
    COVID-19 first within a source.
    """
    classes = classes_of(predictions)
    table = predictions.assign(_source=_sources(predictions), _cohort=cohort_column(predictions))
    rows = []
    for (source, label), part in table.groupby(["_source", "label"], sort=True):
        cis = bootstrap_cis(part, {"covid": called_covid, "recall": _recall_of(label, classes)}, n=n, seed=seed)
        rows.append(
            {
                "source": source,
                "label": label,
                "cohort": ", ".join(sorted(set(part["_cohort"]))),
                "images": len(part),
                "patients": int(part["patient_id"].nunique()),
                "called covid": cis["covid"][0],
                "called covid low": cis["covid"][1],
                "called covid high": cis["covid"][2],
                "recall": cis["recall"][0],
                "recall low": cis["recall"][1],
                "recall high": cis["recall"][2],
            }
        )
    frame = pd.DataFrame(rows, columns=SOURCE_COLUMNS)
    return frame.sort_values(["source", "label"], key=_covid_first, kind="stable").reset_index(drop=True)


def _covid_first(column: pd.Series) -> pd.Series:
    return column.map(lambda v: (v != COVID, v)) if column.name == "label" else column


def negative_sources(predictions: pd.DataFrame, n: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per source, its films without COVID-19: images, patients, the false COVID-19 rate and its interval.

    Empty when the model has no COVID-19 class or the films no negative label.
    """
    columns = ["source", "images", "patients", "false covid", "false covid low", "false covid high"]
    if prob_column(COVID) not in predictions:
        return pd.DataFrame(columns=columns)
    table = predictions.assign(_source=_sources(predictions))
    table = table[table["label"] != COVID]
    rows = []
    for source, part in table.groupby("_source", sort=True):
        point, low, high = bootstrap_cis(part, {"rate": called_covid}, n=n, seed=seed)["rate"]
        rows.append(
            {
                "source": source,
                "images": len(part),
                "patients": int(part["patient_id"].nunique()),
                "false covid": point,
                "false covid low": low,
                "false covid high": high,
            }
        )
    return pd.DataFrame(rows, columns=columns)


def worst_false_covid(negatives: pd.DataFrame) -> WorstSource | None:
    """The negative source whose films are most often called COVID-19 (:func:`negative_sources`), or None."""
    if negatives.empty:
        return None
    row = negatives.loc[negatives["false covid"].idxmax()]
    rate = Estimate(float(row["false covid"]), float(row["false covid low"]), float(row["false covid high"]))
    return WorstSource(str(row["source"]), rate, int(row["images"]), int(row["patients"]))


def source_summary(table: pd.DataFrame, negatives: pd.DataFrame) -> SourceResults:
    """The per-source figures for a report's ``summary.json`` and the model card: the rows of
    :func:`source_table` and :func:`negative_sources` as plain records, and the worst negative source
    (the headline)."""
    return SourceResults(_records(table), _records(negatives), worst_false_covid(negatives))


def _records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON-ready dicts: Python numbers, None for a missing value."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def worst_phrase(worst: WorstSource | None, percent: bool = True) -> str:
    """The headline in words: ``"worst false-COVID rate over negative sources 48.8% (ozturk, 95% CI ...)"``."""
    if not worst:
        return "worst false-COVID rate over negative sources n/a (no negative films with a source)"
    rate, low, high = worst.rate.value, worst.rate.low, worst.rate.high
    if percent:
        return (
            f"worst false-COVID rate over negative sources {rate:.1%} ({worst.source}, "
            f"{worst.images} films; 95% CI {low:.1%}-{high:.1%})"
        )
    return (
        f"worst false-COVID rate over negative sources {rate:.4f} ({worst.source}, "
        f"95% CI {low:.2f}-{high:.2f}, {worst.images} films)"
    )


__all__ = [
    "SOURCE_COLUMNS",
    "allowed_predictions",
    "called_covid",
    "negative_sources",
    "source_summary",
    "source_table",
    "worst_false_covid",
    "worst_phrase",
]
