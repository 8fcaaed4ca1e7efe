"""Data preparation on the real data (Table I counts, folds, duplicates) and on synthetic edge cases."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import write_xray
from coronet.data.dedup import connected_groups, edge_signature, near_duplicate_pairs, perceptual_hash
from coronet.data.prepare import (
    PAPER_CLASS_COUNTS,
    PrepareConfig,
    collect_candidates,
    load_cache,
    prepare_dataset,
    undersample,
)

#: Known same-film pairs from ../shared/data/README.md (file stems), exact or near.
KNOWN_DUPLICATES = [
    ("353889E0-A1E8-4F9E-A0B8-F24F36BCFBFB", "case_72_RX-TORACE1"),
    ("person1430_bacteria_3695", "person1430_bacteria_3696"),
    ("16660_2_1", "covid-19-rapidly-progressive-acute-respiratory-distress-syndrome-ards-admission"),
    ("16660_3_1", "covid-19-rapidly-progressive-acute-respiratory-distress-syndrome-ards-day-1"),
    ("16660_4_1", "covid-19-rapidly-progressive-acute-respiratory-distress-syndrome-ards-day-2"),
    ("16660_5_1", "covid-19-rapidly-progressive-acute-respiratory-distress-syndrome-ards-day-3"),
    ("AR-1", "AR-2"),
    ("A7E260CE-8A00-4C5F-A7F5-27336527A981", "case_76_1-3"),
    ("E63574A7-4188-4C8D-8D17-9D67A18A1AFA", "F4341CE7-73C9-45C6-99C8-8567A5484B63"),
]


def stem(path: str) -> str:
    return path.rsplit("/", 1)[1].rsplit(".", 1)[0]


@pytest.fixture(scope="module")
def paper_dataset(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dataset")
    return prepare_dataset(data_dir, out, PrepareConfig())


def test_table_one_counts(paper_dataset):
    manifest = paper_dataset.manifest
    assert manifest.label.value_counts().to_dict() == PAPER_CLASS_COUNTS
    assert {"path", "label", "source", "patient_id", "sha256", "fold"} <= set(manifest.columns)
    assert manifest.patient_id.notna().all() and manifest.sha256.str.fullmatch("[0-9a-f]{64}").all()
    assert not manifest.sha256.duplicated().any()
    assert sorted(manifest.fold.unique()) == [1, 2, 3, 4]
    # stratified: each fold holds about a quarter of each class
    per_fold = manifest.groupby(["label", "fold"]).size().unstack()
    assert (per_fold.max(axis=1) - per_fold.min(axis=1) <= 6).all()


def test_patient_split_has_no_leak(paper_dataset):
    manifest = paper_dataset.manifest
    assert manifest.groupby("patient_id").fold.nunique().max() == 1
    near = paper_dataset.duplicates.query("kind == 'near'")
    assert len(near) > 0 and (near.fold == near.other_fold).all()


def test_dataset_directory(paper_dataset):
    out = paper_dataset.out
    written = pd.read_csv(out / "manifest.csv")
    assert len(written) == 1251
    cache = load_cache(out, 150)
    assert cache.shape == (1251, 150, 150) and cache.dtype == np.uint8
    row = written.iloc[17]
    expected = np.asarray(Image.open(row.path).convert("L").resize((150, 150), Image.Resampling.BILINEAR))
    assert np.array_equal(cache[row.cache_index], expected)
    record = json.loads((out / "prepare.json").read_text())
    assert record["images"] == 1251 and record["config"]["split"] == "patient"
    summary = (out / "summary.md").read_text()
    assert "| covid | cohen | 423 | 284 | 284 |" in summary
    assert "patients in more than one fold: 0" in summary


def test_known_duplicates_are_found(data_dir, tmp_path):
    """With every image selected, all known same-film pairs of the shared data's README come out."""
    everything = {"covid": 1000, "normal": 1000, "bacterial": 1000, "viral": 1000}
    with pytest.warns(UserWarning, match="taking all"):
        result = prepare_dataset(data_dir, tmp_path, PrepareConfig(class_counts=everything))
    found = {frozenset((stem(a), stem(b))) for a, b in zip(result.duplicates.path, result.duplicates.other_path)}
    for pair in KNOWN_DUPLICATES:
        assert frozenset(pair) in found, pair
    # and not much else: distinct films of look-alike Kaggle patients are not merged
    assert len(found) <= len(KNOWN_DUPLICATES) + 2
    exact = result.duplicates.query("kind == 'exact'")
    assert {frozenset((stem(a), stem(b))) for a, b in zip(exact.path, exact.other_path)} >= {
        frozenset(KNOWN_DUPLICATES[0]),
        frozenset(KNOWN_DUPLICATES[1]),
    }
    # the byte-identical film listed under patients 78 and 201 makes them one fold group
    manifest = result.manifest
    assert manifest.loc[manifest.patient_id.isin(["cohen:78", "cohen:201"]), "fold"].nunique() == 1


def test_undersampling_is_seeded(data_dir):
    candidates = collect_candidates(data_dir, PrepareConfig())
    first = undersample(candidates, PAPER_CLASS_COUNTS, seed=0)
    again = undersample(candidates.sample(frac=1, random_state=1), PAPER_CLASS_COUNTS, seed=0)
    other = undersample(candidates, PAPER_CLASS_COUNTS, seed=1)
    assert first.relpath.tolist() == again.relpath.tolist()
    assert first.relpath.tolist() != other.relpath.tolist()
    assert first.label.value_counts().to_dict() == PAPER_CLASS_COUNTS


def make_folder_dataset(root, per_class=12, patients_per_class=4):
    for label in ("covid", "normal"):
        for k in range(per_class):
            write_xray(
                root / label / f"p{label}{k % patients_per_class}_{k}.png", seed=hash((label, k)) % 2**32, size=(48, 40)
            )


def small_config(**changes):
    options = dict(
        sources=("mine",), class_counts={"covid": 10, "normal": 10}, folds=2, seed=3, image_size=32, workers=1
    )
    options.update(changes)
    return PrepareConfig(**options)


@pytest.fixture
def folder_data(tmp_path, monkeypatch):
    """A data directory holding a new source, "mine" (a tiny synthetic folder-per-class tree), registered by one
    SourceSpec: nothing else is told about it."""
    from coronet.data.sources import SOURCES, SourceSpec, read_folder

    root = tmp_path / "data"
    make_folder_dataset(root / "mine")
    monkeypatch.setitem(
        SOURCES,
        "mine",
        SourceSpec("mine", "mine", read_folder, "a test source", options={"patient_from": r"^(p[a-z]+\d)_"}),
    )
    return root


def test_same_seed_same_dataset(folder_data, tmp_path):
    a = prepare_dataset(folder_data, tmp_path / "a", small_config())
    b = prepare_dataset(folder_data, tmp_path / "b", small_config())
    assert a.manifest[["relpath", "fold"]].equals(b.manifest[["relpath", "fold"]])
    assert np.array_equal(load_cache(a.out, 32), load_cache(b.out, 32))
    assert a.manifest.groupby("patient_id").fold.nunique().max() == 1


def test_image_split_mixes_patients(folder_data, tmp_path):
    result = prepare_dataset(folder_data, tmp_path / "img", small_config(split="image"))
    assert result.manifest.groupby("patient_id").fold.nunique().max() == 2


def test_unreadable_files_are_skipped_and_listed(folder_data, tmp_path, caplog):
    (folder_data / "mine" / "covid" / "pcovid9_broken.png").write_bytes(b"not an image at all")
    (folder_data / "mine" / "normal" / "pnormal9_empty.png").write_bytes(b"")
    caplog.set_level(logging.INFO, logger="coronet")
    with pytest.warns(UserWarning, match="taking all"):
        result = prepare_dataset(folder_data, tmp_path / "out", small_config(class_counts={"covid": 99, "normal": 99}))
    assert sorted(stem(p) for p in result.skipped.path) == ["pcovid9_broken", "pnormal9_empty"]
    assert len(result.manifest) == 24
    assert any("pcovid9_broken" in line for line in caplog.messages)
    assert "unreadable files skipped: 2" in (tmp_path / "out" / "summary.md").read_text()


def test_near_duplicate_detection_on_resized_copy():
    rng = np.random.default_rng(0)
    film = rng.normal(size=(200, 160)).cumsum(axis=0).cumsum(axis=1)
    film = ((film - film.min()) / np.ptp(film) * 255).astype(np.uint8)
    resized = np.asarray(Image.fromarray(film).resize((120, 150), Image.Resampling.LANCZOS))
    other = np.ascontiguousarray(film[::-1])
    images = [film, resized, other]
    pairs = near_duplicate_pairs([perceptual_hash(x) for x in images], np.stack([edge_signature(x) for x in images]))
    assert [(a, b) for a, b, *_ in pairs] == [(0, 1)]


def test_connected_groups():
    assert connected_groups(5, [(0, 3), (3, 4)]).tolist() == [0, 1, 2, 0, 0]


def test_a_chain_of_duplicate_films_makes_one_person_and_one_fold():
    """P and Q share a film, Q and R share another: P, Q and R are one person, whatever the order of the pairs."""
    from coronet.data.dedup import person_groups
    from coronet.data.prepare import assign_folds

    patients = ["P", "P", "Q", "R", "R", "S", "T", "U", "V", "W", "X", "Y"]
    for same_person in ([("Q", "P"), ("R", "Q")], [("R", "Q"), ("Q", "P")], [("P", "Q"), ("Q", "R")]):
        groups = person_groups(patients, same_person)
        assert len({groups[k] for k in range(5)}) == 1
        assert len(set(groups)) == 1 + 7
        labels = ["a", "b"] * 6
        folds = assign_folds(labels, groups, 4, seed=0)
        assert len({folds[k] for k in range(5)}) == 1
    # one patient with two duplicates, and a near-duplicate film pair between two other patients
    groups = person_groups(["A", "B", "C", "D", "E"], [("B", "A"), ("C", "A")], same_film=[(3, 4, 5, 0.9)])
    assert groups[0] == groups[1] == groups[2] and groups[3] == groups[4] and groups[0] != groups[3]
