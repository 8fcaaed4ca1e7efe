"""Extra cohorts: films added beside the paper's Table I rows to take a shortcut away from the model.

In the paper's data every normal and pneumonia film is a child's from one hospital and every
COVID-19 film an adult's from the ieee8023 collection, so "adult" and "ieee8023's look" each
predict COVID-19. An extra cohort adds films that break one of those links:

* ``adult``: dataset-2's adult ChestX-ray8 films (``No_findings`` -> normal, ``Pneumonia`` ->
  pneumonia, bacterial or viral unknown);
* ``source``: adult films without COVID-19 from the positives' own collections (ieee8023
  bacterial, viral and "other" -- not COVID-19, nothing more known -- and Actualmed normals);
* ``radiography``: COVID-19 films from a second collection (BIMCV-COVID19+, Valencia: clinical films
  from 11 hospitals), so that "COVID-19" stops meaning "ieee8023".

A cohort is one :class:`Cohort`: the source that reads it, its label map (to full or partial
labels), where a run keeps its held-out test and how reports name it. Preparation
(:func:`coronet.data.prepare.cohort_rows`) gives its films patient-grouped folds of their own, so
each fold's model is tested on the cohort's films of that fold; the paper's tables are computed
on the Table I rows only. A third cohort is one more ``register_cohort(Cohort(...))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from .sources.ozturk import FOLDERS as OZTURK_FOLDERS

#: The ``cohort`` value of the paper's own Table I rows (a manifest without the column has only these).
TABLE1 = "table1"


@dataclass(frozen=True)
class Cohort:
    """One extra cohort.

    name: its ``cohort`` column value.
    source: the :class:`coronet.data.sources.SourceSpec` that reads it (its folder, or a data
        directory holding that folder, is what the option names).
    markers: sub-folders that identify the source's own folder.
    label_map: source label -> training label: a class, or a partial label of
        :data:`coronet.tasks.PARTIAL_LABELS`; labels not in the map are not taken.
    test_dir: ``RUN/<test_dir>/predictions.csv``: the cohort's films predicted by the fold models of
        a run that did not train on them (``coronet.evaluation.cohorttest``).
    title: how reports and the model card name it.
    option: the option of ``coronet data prepare`` (DIR) and ``coronet reproduce`` (a switch) that adds it
        (default ``--<name>-negatives``).
    """

    name: str
    source: str
    markers: tuple[str, ...]
    label_map: Mapping[str, str]
    test_dir: str
    title: str
    option: str = ""

    @property
    def flag(self) -> str:
        return self.option or f"--{self.name}-negatives"


#: Every extra cohort, by name.
COHORTS: dict[str, Cohort] = {}


def register_cohort(cohort: Cohort) -> Cohort:
    if cohort.name == TABLE1:
        raise ValueError(f"{TABLE1!r} names the paper's own rows")
    COHORTS[cohort.name] = cohort
    return cohort


ADULT = register_cohort(
    Cohort(
        "adult",
        "ozturk",
        tuple(folder for folder, label in OZTURK_FOLDERS.items() if label != "covid"),
        {"normal": "normal", "pneumonia": "pneumonia"},
        "adult-test",
        "adult films without COVID-19 (dataset-2's ChestX-ray8 No_findings and Pneumonia)",
    )
)
SOURCE = register_cohort(
    Cohort(
        "source",
        "source-negatives",
        ("cohen", "actualmed"),
        {"bacterial": "bacterial", "viral": "viral", "other": "other", "normal": "normal"},
        "source-test",
        "films without COVID-19 from the positives' own collections (ieee8023 non-COVID, Actualmed normals)",
    )
)


RADIOGRAPHY = register_cohort(
    Cohort(
        "radiography",
        "radiography",
        ("COVID-19_Radiography_Dataset",),
        {"covid": "covid"},
        "radiography-test",
        "COVID-19 films from a second collection (BIMCV-COVID19+, Valencia, through the COVID-19 Radiography Database)",
        option="--radiography",
    )
)


def get_cohort(name: str) -> Cohort:
    if name not in COHORTS:
        raise ValueError(f"unknown cohort {name!r}; choose from {', '.join(COHORTS)}")
    return COHORTS[name]


def cohort_column(table: pd.DataFrame) -> pd.Series:
    """Each row's cohort: its ``cohort`` value, :data:`TABLE1` where the table has none."""
    if "cohort" not in table:
        return pd.Series(TABLE1, index=table.index)
    return table["cohort"].fillna(TABLE1)


def table1_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's own rows of a manifest or predictions table (the paper's tables are computed on these)."""
    if "cohort" not in table:
        return table
    return table[cohort_column(table) == TABLE1].reset_index(drop=True)


def extra_rows(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The rows of each extra cohort present in ``table``, by cohort name (empty when there are none)."""
    cohorts = cohort_column(table)
    return {
        str(name): table[cohorts == name].reset_index(drop=True) for name in dict.fromkeys(cohorts) if name != TABLE1
    }


__all__ = [
    "ADULT",
    "COHORTS",
    "Cohort",
    "RADIOGRAPHY",
    "SOURCE",
    "TABLE1",
    "cohort_column",
    "extra_rows",
    "get_cohort",
    "register_cohort",
    "table1_rows",
]
