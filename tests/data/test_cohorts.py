"""Extra cohorts on the real data: source negatives read from their own layout, folds of their own without a
patient in two folds, and the paper's Table I rows unchanged by them."""

from __future__ import annotations

import pandas as pd
import pytest

from coronet.data.cohorts import ADULT, COHORTS, SOURCE, TABLE1, Cohort, register_cohort
from coronet.data.prepare import PrepareConfig, prepare_dataset
from coronet.data.sources import read_source

pytestmark = pytest.mark.slow  # decodes real films


def test_source_negatives_are_read_with_their_collection_and_patients(data_dir):
    table = read_source("source-negatives", data_dir / "source-negatives")
    counts = table.groupby(["source", "label"]).size().to_dict()
    assert counts == {
        ("actualmed", "normal"): 18,
        ("cohen", "bacterial"): 11,
        ("cohen", "other"): 18,
        ("cohen", "viral"): 12,
    }
    cohen = table[table.source == "cohen"]
    assert cohen.patient_id.nunique() == 23 and cohen.patient_id.str.startswith("cohen:").all()
    assert table[table.source == "actualmed"].patient_id.nunique() == 18


@pytest.fixture(scope="module")
def prepared(data_dir, tmp_path_factory):
    common = dict(image_size=32, class_counts={"covid": 40, "normal": 40, "bacterial": 40, "viral": 40})
    plain = tmp_path_factory.mktemp("plain")
    prepare_dataset(data_dir, plain, PrepareConfig(**common))
    extra = tmp_path_factory.mktemp("extra")
    config = PrepareConfig(
        **common,
        cohorts={ADULT.name: str(data_dir), SOURCE.name: str(data_dir / "source-negatives")},
        cohort_per_class={ADULT.name: 30},
    )
    prepare_dataset(data_dir, extra, config)
    return pd.read_csv(plain / "manifest.csv"), pd.read_csv(extra / "manifest.csv"), extra


def test_table1_rows_are_unchanged_by_extra_cohorts(prepared):
    plain, extra, _ = prepared
    table1 = extra[extra.cohort == TABLE1][list(plain.columns)].reset_index(drop=True)
    # the same films, patients, folds, fold groups and cache rows (the cohorts' rows come after them)
    pd.testing.assert_frame_equal(table1, plain, check_dtype=False)


def test_no_patient_is_in_two_folds_within_any_cohort(prepared):
    _, extra, _ = prepared
    assert set(extra.cohort) == {TABLE1, ADULT.name, SOURCE.name}
    for cohort, rows in extra.groupby("cohort"):
        assert rows.groupby("patient_id").fold.nunique().max() == 1, cohort
        assert sorted(rows.fold.unique()) == [1, 2, 3, 4], cohort
    assert extra.groupby("patient_id").cohort.nunique().max() == 1  # and no patient in two cohorts
    source = extra[extra.cohort == SOURCE.name]
    assert len(source) == 59 and set(source.label) == {"bacterial", "viral", "other", "normal"}
    assert set(source.source_label) == {"bacterial", "viral", "other", "normal"}


def test_a_third_cohort_is_one_definition(data_dir, tmp_path):
    """Register a cohort (dataset-2's COVID-19-free films read as one label) and prepare with it: nothing else."""
    cohort = register_cohort(
        Cohort("nofindings", "ozturk", ("No_findings",), {"normal": "normal"}, "nofindings-test", "No_findings only")
    )
    try:
        config = PrepareConfig(
            image_size=32,
            class_counts={"covid": 8, "normal": 8, "bacterial": 8, "viral": 8},
            cohorts={cohort.name: str(data_dir)},
            cohort_per_class={cohort.name: 12},
        )
        manifest = prepare_dataset(data_dir, tmp_path, config).manifest
        rows = manifest[manifest.cohort == "nofindings"]
        assert len(rows) == 12 and set(rows.label) == {"normal"} and set(rows.source_label) == {"normal"}
        assert "normal (nofindings) | ozturk" in (tmp_path / "summary.md").read_text()
    finally:
        COHORTS.pop(cohort.name)
