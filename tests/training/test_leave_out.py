"""Leave one collection out: no fold trains or validates on a held-out source's films, nor on a film linked to one
of them by a patient or a duplicate chain; each held-out film is then predicted once, by its own fold's model, and
the report shows the collection's figures."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from coronet.cli import app
from coronet.data.leaveout import held_out, not_trained_on
from coronet.evaluation.cohorttest import leave_out_test
from coronet.evaluation.report import write_report
from coronet.training import fit
from coronet.training.fit import run_cv, training_rows
from coronet.training.profiles import get_profile

SIZE = 32


def leave_out_dataset(out):
    """A prepared dataset of 2 folds: ieee8023 COVID-19 films (``cohen``, two per patient), BIMCV COVID-19 films
    (``radiography``), Kermany negatives (``kaggle``); one dataset-2 film of an ieee8023 patient (``ozturk``,
    patient ``cohen:1``) and one Kermany film in a duplicate chain (fold group) with an ieee8023 film."""
    rng = np.random.default_rng(0)
    rows = []

    def add(source, label, patient, fold, group=None, cohort="table1"):
        rows.append(
            {
                "path": f"/films/{source}-{label}-{len(rows)}.png",
                "label": label,
                "source": source,
                "patient_id": patient,
                "fold": fold,
                "group": group if group is not None else 1000 + len(rows),
                "cohort": cohort,
            }
        )

    for k in range(8):
        add("cohen", "covid", f"cohen:{k // 2}", 1 + k // 4, group=k // 2)
    for k in range(8):
        add("radiography", "covid", f"radiography:{k}", 1 + k % 2, cohort="radiography")
    for label in ("normal", "bacterial", "viral"):
        for k in range(6):
            add("kaggle", label, f"kaggle:{label}{k}", 1 + k % 2)
    add("ozturk", "covid", "cohen:1", 1)  # another collection's copy of an ieee8023 patient's film
    add("kaggle", "normal", "kaggle:chained", 2, group=3)  # a duplicate chain with cohen:3's films
    manifest = pd.DataFrame(rows)
    manifest["cache_index"] = np.arange(len(manifest))
    out.mkdir()
    manifest.to_csv(out / "manifest.csv", index=False)
    films = rng.integers(0, 256, size=(len(manifest), SIZE, SIZE), dtype=np.uint8)
    np.save(out / f"images-{SIZE}.npy", films)
    (out / "prepare.json").write_text(json.dumps({"config": {"image_size": SIZE}}))
    return out


def test_not_trained_on_follows_patients_and_chains_through_other_sources():
    manifest = pd.DataFrame(
        {
            "source": ["cohen", "ozturk", "kaggle", "kaggle", "kaggle"],
            "patient_id": ["cohen:1", "cohen:1", "kaggle:a", "kaggle:a", "kaggle:b"],
            "group": [1, 2, 2, 3, 4],  # ozturk's film shares a chain with kaggle:a's first film
        }
    )
    assert held_out(manifest, "cohen").tolist() == [True, False, False, False, False]
    # cohen:1 -> its dataset-2 copy -> the chain -> kaggle:a's other film; kaggle:b is not linked
    assert not_trained_on(manifest, "cohen").tolist() == [True, True, True, True, False]
    assert not not_trained_on(manifest, None).any()
    with pytest.raises(ValueError, match=r"leave_out 'actualmed': no film of that source here \(sources: cohen"):
        not_trained_on(manifest, "actualmed")


@pytest.fixture(scope="module")
def left_out_run(tmp_path_factory):
    """A 2-fold, 1-epoch run of the tiny network with ``leave_out=cohen``, the indices each fold trained and
    validated on (read where the datasets are built), its leave-out test and its report."""
    base = tmp_path_factory.mktemp("leave-out")
    dataset = leave_out_dataset(base / "dataset")
    config = get_profile("tiny").with_overrides(epochs=1, train_per_class=None, leave_out="cohen")
    built = []
    original = fit.CachedXrays

    class Spy(original):  # type: ignore[misc, valid-type]
        def __init__(self, cache, indices, *args, **kwargs):
            built.append(sorted(int(i) for i in indices))
            super().__init__(cache, indices, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fit, "CachedXrays", Spy)
        run_cv(dataset, base / "run", config, profile="tiny", progress=False)
    written = leave_out_test(base / "run")
    summary = write_report(base / "run", n_bootstrap=20)
    # fit_fold builds the training set, then the validation set, fold by fold
    return dataset, base / "run", config, {1: built[0], 2: built[2]}, {1: built[1], 2: built[3]}, written, summary


def test_leaving_a_source_out_removes_its_films_and_their_links_from_training(left_out_run):
    dataset, run, config, trained, validated, _, _ = left_out_run
    manifest = pd.read_csv(dataset / "manifest.csv")
    cohen = set(manifest.index[manifest.source == "cohen"])
    linked = set(manifest.index[manifest.patient_id.eq("cohen:1") & manifest.source.eq("ozturk")])
    chained = set(manifest.index[manifest.patient_id == "kaggle:chained"])
    for fold in (1, 2):
        used = set(trained[fold])  # cache_index is the manifest row here
        assert not used & (cohen | linked | chained), fold
        assert used == set(manifest.index[(manifest.fold != fold) & ~not_trained_on(manifest, "cohen")])
        assert len(used) == len(training_rows(manifest, fold, config))
        card = json.loads((run / f"fold-{fold}" / "model" / "model.json").read_text())
        assert card["training"]["train_images"] == len(used)
        # validated: the fold's films but the held-out ones; the linked films are tested in their own fold
        assert set(validated[fold]) == set(manifest.index[(manifest.fold == fold) & (manifest.source != "cohen")])
    assert set(validated[1]) >= linked and set(validated[2]) >= chained


def test_every_held_out_film_is_predicted_once_by_its_own_folds_model(left_out_run):
    dataset, run, _, _, _, written, _ = left_out_run
    manifest = pd.read_csv(dataset / "manifest.csv")
    held = pd.read_csv(written)
    assert written == run / "leave-out" / "predictions.csv"
    cohen = manifest[manifest.source == "cohen"]
    assert sorted(held.path) == sorted(cohen.path) and not held.path.duplicated().any()
    assert dict(zip(held.path, held.fold)) == dict(zip(cohen.path, cohen.fold))
    assert not set(pd.read_csv(run / "predictions.csv").path) & set(cohen.path)  # not in the cross-validation
    for fold in (1, 2):
        entry = json.loads((run / f"fold-{fold}" / "model" / "model.json").read_text())["leave_out_test"]
        assert entry["source"] == "cohen" and entry["films"] == 4 and entry["false_covid_rate"] is None


def test_the_report_shows_the_held_out_collection(left_out_run):
    _, run, _, _, _, written, summary = left_out_run
    held = pd.read_csv(written)
    assert summary.leave_out is not None and summary.leave_out.source == "cohen"
    assert summary.leave_out.n_images == 8 and summary.leave_out.n_patients == 4
    assert summary.leave_out.covid_recall.value == pytest.approx((held.pred == "covid").mean())
    saved = json.loads((run / "report" / "summary.json").read_text())
    assert saved["leave_out"]["source"] == "cohen" and saved["leave_out"]["rows"][0]["held out"] is True
    sources = pd.read_csv(run / "report" / "sources.csv").set_index(["source", "label"])
    assert bool(sources.loc[("cohen", "covid"), "held out"]) and not sources.loc[("radiography", "covid"), "held out"]
    assert "Held-out collection cohen" in (run / "report" / "report.md").read_text()


def test_cv_refuses_to_leave_out_a_source_the_data_does_not_have(tmp_path):
    dataset = leave_out_dataset(tmp_path / "dataset")
    args = ["cv", "--dataset", str(dataset), "--out", str(tmp_path / "run"), "--profile", "tiny"]
    result = CliRunner().invoke(app, [*args, "--leave-out", "actualmed", "--no-progress"])
    assert result.exit_code == 2
    assert "leave_out 'actualmed': no film of that source here (sources: cohen, kaggle, ozturk, radiography)" in (
        result.output
    )
    assert not (tmp_path / "run").exists()  # refused before anything was written
