"""Per-source figures: does the model see the disease, or the collection a film came from?

In the paper's data each label comes from one collection (COVID-19: ieee8023; the rest: Kermany
et al.'s children's films), so a model can score well by recognising the collection. The figures
that expose it (DeGrave et al. 2021, Zech et al. 2018) are per source: how often the films of
each negative collection are called COVID-19, and how well each collection's films are recognised.

Input is a predictions table (:func:`coronet.layout.read_predictions`) with a ``source`` column
(tables without one count as one source, ``unknown``); extra cohorts' rows
(:mod:`coronet.data.cohorts`) are ordinary rows here, and so are a held-out collection's (a ``held_out``
column marks them). Intervals are 95 % bootstrap intervals over patients
(:mod:`coronet.evaluation.bootstrap`).

Each positive collection's COVID-19 films are also ranked against one fixed set of negatives, the
ieee8023 films without COVID-19 (:data:`REFERENCE_NEGATIVES`): the AUC of ``prob_covid``. ieee8023 is the
one collection with films of both kinds, so a model that learnt its look ranks its own negatives high
(AUC near 0.5 for ieee8023's positives) however well it separates collections.
"""

from __future__ import annotations

import pandas as pd
from sklearn.metrics import roc_auc_score

from ..data.cohorts import cohort_column
from ..layout import classes_of, prob_column
from ..tasks import PARTIAL_LABELS
from .bootstrap import bootstrap_cis
from .metrics import COVID
from .results import Estimate, SourceResults, WorstSource

#: The source whose films without COVID-19 every collection's COVID-19 films are ranked against (the AUC column).
REFERENCE_NEGATIVES = "cohen"
#: The AUC column of :func:`source_table` (and its interval, `` low`` and `` high``).
AUC = f"auc vs {REFERENCE_NEGATIVES} non-covid"
#: Columns of :func:`source_table`.
SOURCE_COLUMNS = [
    "source",
    "label",
    "cohort",
    "held out",
    "images",
    "patients",
    "called covid",
    "called covid low",
    "called covid high",
    "recall",
    "recall low",
    "recall high",
    AUC,
    f"{AUC} low",
    f"{AUC} high",
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
    right); for COVID-19 films, :data:`AUC`: the AUC of ``prob_covid`` between them and the
    :data:`REFERENCE_NEGATIVES` films without COVID-19 among ``predictions`` (empty without such films).
    Each with its 95 % interval over patients. ``held out``: the films are a collection the run left
    out (rows with ``held_out`` true). Rows are ordered by source, COVID-19 first within a source.
    """
    classes = classes_of(predictions)
    table = predictions.assign(_source=_sources(predictions), _cohort=cohort_column(predictions))
    reference = table[(table["_source"] == REFERENCE_NEGATIVES) & (table["label"] != COVID)]
    rows = []
    for (source, label), part in table.groupby(["_source", "label"], sort=True):
        cis = bootstrap_cis(part, {"covid": called_covid, "recall": _recall_of(label, classes)}, n=n, seed=seed)
        auc = covid_auc(part, reference, n=n, seed=seed) if label == COVID else (float("nan"),) * 3
        rows.append(
            {
                "source": source,
                "label": label,
                "cohort": ", ".join(sorted(set(part["_cohort"]))),
                "held out": bool(part["held_out"].fillna(False).astype(bool).any()) if "held_out" in part else False,
                "images": len(part),
                "patients": int(part["patient_id"].nunique()),
                "called covid": cis["covid"][0],
                "called covid low": cis["covid"][1],
                "called covid high": cis["covid"][2],
                "recall": cis["recall"][0],
                "recall low": cis["recall"][1],
                "recall high": cis["recall"][2],
                AUC: auc[0],
                f"{AUC} low": auc[1],
                f"{AUC} high": auc[2],
            }
        )
    frame = pd.DataFrame(rows, columns=SOURCE_COLUMNS)
    return frame.sort_values(["source", "label"], key=_covid_first, kind="stable").reset_index(drop=True)


def covid_auc(positives: pd.DataFrame, negatives: pd.DataFrame, n: int = 1000, seed: int = 0) -> tuple:
    """``(AUC, low, high)`` of ``prob_covid`` ranking ``positives`` above ``negatives``, its interval by bootstrap
    over the patients of both; nan when either is empty or the table has no ``prob_covid``."""
    if positives.empty or negatives.empty or prob_column(COVID) not in positives:
        return (float("nan"),) * 3
    both = pd.concat([positives.assign(_positive=True), negatives.assign(_positive=False)], ignore_index=True)

    def auc(df: pd.DataFrame) -> float:
        truth = df["_positive"].to_numpy(dtype=bool)
        return float(roc_auc_score(truth, df[prob_column(COVID)])) if 0 < truth.sum() < len(truth) else float("nan")

    return bootstrap_cis(both, {"auc": auc}, n=n, seed=seed)["auc"]


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
    "AUC",
    "REFERENCE_NEGATIVES",
    "SOURCE_COLUMNS",
    "allowed_predictions",
    "called_covid",
    "covid_auc",
    "negative_sources",
    "source_summary",
    "source_table",
    "worst_false_covid",
    "worst_phrase",
]
