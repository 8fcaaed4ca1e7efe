"""docs/table1-manifest.csv, the published Table I selection: well formed, and what `coronet data prepare` makes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from coronet import paper
from coronet.layout import MANIFEST

PUBLISHED = Path(__file__).resolve().parents[2] / "docs" / "table1-manifest.csv"
COLUMNS = ["relpath", "label", "source", "patient_id", "sha256", "fold"]


def published() -> pd.DataFrame:
    return pd.read_csv(PUBLISHED, dtype={"fold": int})


def test_the_published_manifest_is_table_1_in_patient_grouped_folds():
    table = published()
    assert list(table.columns) == COLUMNS
    assert table["relpath"].is_unique and table["relpath"].is_monotonic_increasing
    assert table["label"].value_counts().to_dict() == paper.TABLE1
    assert sorted(table["fold"].unique()) == [1, 2, 3, 4]
    assert table.groupby("patient_id")["fold"].nunique().max() == 1  # no patient in two folds
    assert table["sha256"].str.fullmatch(r"[0-9a-f]{64}").all()


def test_prepare_on_the_real_data_makes_the_published_manifest(prepared_dataset):
    # the session's preparation: default selection, seed and folds (its image cache is smaller, which selects nothing)
    made = pd.read_csv(prepared_dataset / MANIFEST)[COLUMNS].sort_values("relpath").reset_index(drop=True)
    pd.testing.assert_frame_equal(made, published(), check_dtype=False)
