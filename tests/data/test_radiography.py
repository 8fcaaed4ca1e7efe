"""The COVID-19 Radiography Database reader on synthetic v4 and v5 trees (tiny films made here: the Database's own
films may not be redistributed), its BIMCV selection, and its films checked against every other source's."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from coronet.cli import app
from coronet.data.cohorts import RADIOGRAPHY
from coronet.data.prepare import OTHER_SOURCE, PrepareConfig, prepare_dataset
from coronet.data.sources import find_source_root, read_source
from coronet.data.sources.radiography import read_xlsx
from radiography_helpers import BIMCV, HANNOVER, film, save, synthetic_data, v4_tree, write_xlsx


def test_v4_takes_the_bimcv_number_range_only_with_runs_of_ten_as_patients(tmp_path):
    data = v4_tree(tmp_path / "data" / "radiography", [1, 1893, 1894, 1899, 1900, 3616])
    table = read_source("radiography", data)
    assert table["number"].tolist() == [1894, 1899, 1900, 3616]  # files 1-1893 are never listed; Normal/ is not read
    assert set(table.label) == {"covid"} and set(table.source) == {"radiography"}
    assert table["patient_id"].tolist() == [
        "radiography:1890-1899",
        "radiography:1890-1899",
        "radiography:1900-1909",
        "radiography:3610-3619",
    ]
    # --radiography DIR: a data directory holding radiography/, that folder, or the Database's folder itself
    for given in (tmp_path / "data", data, data / "COVID-19_Radiography_Dataset"):
        assert find_source_root("radiography", given, RADIOGRAPHY.markers) == data
    assert len(read_source("radiography", data / "COVID-19_Radiography_Dataset")) == 4


def test_v5_takes_the_films_its_metadata_names_bimcv(tmp_path):
    dataset = tmp_path / "radiography" / "COVID-19_Radiography_Dataset"
    for n in (1, 2, 1900, 1901, 1902):
        save(dataset / "COVID" / "images" / f"COVID-{n}.png", film(n))
        save(dataset / "COVID" / "masks" / f"COVID-{n}.png", film(n + 50_000))  # v5's lung masks: not films
    write_xlsx(
        dataset / "COVID.metadata.xlsx",
        [
            ["FILE NAME", "FORMAT", "SIZE", "URL"],
            ["COVID-1", "PNG", "256*256", HANNOVER],
            ["COVID-2", "PNG", "256*256", BIMCV],  # named BIMCV's below 1894: kept, with a warning
            ["COVID-1900.png", "PNG", "256*256", BIMCV],  # a name with its suffix matches too
            ["covid-1901", "PNG", "256*256", HANNOVER],
            ["COVID-1902", "PNG", "256*256", BIMCV],
            ["COVID-1903", "PNG", "256*256", BIMCV],  # no such file
        ],
    )
    with pytest.warns(UserWarning) as caught:
        table = read_source("radiography", tmp_path / "radiography")
    assert sorted(table["number"]) == [2, 1900, 1902]  # rows are sorted by path, as every reader sorts them
    assert set(table["url"]) == {BIMCV} and all("/images/" in p for p in table.path)
    messages = " | ".join(str(w.message) for w in caught)
    assert "1 BIMCV metadata rows have no image file (e.g. covid-1903)" in messages
    assert "names 1 films numbered below 1894 BIMCV's (COVID-2" in messages


def test_v5_without_its_metadata_is_a_one_line_error(tmp_path):
    save(tmp_path / "COVID-19_Radiography_Dataset" / "COVID" / "images" / "COVID-1900.png", film(1))
    with pytest.raises(FileNotFoundError, match="COVID.metadata.xlsx: missing; the v5 layout"):
        read_source("radiography", tmp_path)
    (tmp_path / "COVID-19_Radiography_Dataset" / "COVID.metadata.xlsx").write_bytes(b"not a workbook")
    with pytest.raises(ValueError, match="not a readable .xlsx workbook"):
        read_source("radiography", tmp_path)
    with pytest.raises(FileNotFoundError, match="no COVID-19 Radiography Database here"):
        read_source("radiography", tmp_path / "COVID-19_Radiography_Dataset" / "COVID")


def test_the_workbook_reader_places_cells_by_their_reference_and_reads_inline_strings(tmp_path):
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    sheet = (
        f'<worksheet xmlns="{main}"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>FILE NAME</t></is></c>'
        '<c r="C1" t="inlineStr"><is><t>URL</t></is></c></row><row r="2"><c r="A2" t="inlineStr"><is><t>COVID-7'
        '</t></is></c><c r="B2"><v>42</v></c></row></sheetData></worksheet>'
    )
    path = tmp_path / "book.xlsx"
    with zipfile.ZipFile(path, "w") as book:  # no relationships part, no shared strings: sheet1.xml by default
        book.writestr("xl/workbook.xml", f'<workbook xmlns="{main}"/>')
        book.writestr("xl/worksheets/sheet1.xml", sheet)
    assert read_xlsx(path) == [["FILE NAME", "", "URL"], ["COVID-7", "42"]]


@pytest.fixture
def cohen_and_radiography(tmp_path) -> Path:
    return synthetic_data(tmp_path / "data")


def test_a_film_that_repeats_an_ieee8023_film_is_dropped_and_reported(cohen_and_radiography, tmp_path):
    data = cohen_and_radiography
    config = PrepareConfig(
        sources=("cohen",),
        class_counts={"covid": None},
        folds=2,
        image_size=32,
        workers=1,
        cohorts={"radiography": str(data)},
    )
    result = prepare_dataset(data, tmp_path / "dataset", config)
    manifest = result.manifest
    bimcv = manifest[manifest.cohort == "radiography"]
    assert sorted(bimcv.number) == list(range(1894, 1906))  # the two copies are gone
    crossed = result.duplicates[result.duplicates.kind == OTHER_SOURCE]
    assert {Path(p).name: Path(q).name for p, q in zip(crossed.other_path, crossed.path)} == {
        "COVID-1906.png": "case-0.png",
        "COVID-1907.png": "case-3.png",
    }
    assert crossed.loc[crossed.other_path.str.endswith("COVID-1906.png"), "correlation"].item() == 1.0
    summary = (tmp_path / "dataset" / "summary.md").read_text()
    assert "extra cohorts' films dropped as the same film as another source's: 2" in summary
    assert "| covid (radiography) | radiography | - | 12 |" in summary
    assert result.manifest.groupby("patient_id").fold.nunique().max() == 1  # a run of ten numbers is one fold group
    assert bimcv.groupby("patient_id").size().to_dict() == {"radiography:1890-1899": 6, "radiography:1900-1909": 6}


def test_prepare_radiography_count_draws_a_seeded_sample_and_refuses_a_count_alone(cohen_and_radiography, tmp_path):
    data = cohen_and_radiography
    runner = CliRunner()
    chosen = []
    for out, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        args = ["data", "prepare", "--data", str(data), "--out", str(tmp_path / out), "--source", "cohen"]
        args += ["--count", "covid=8", *[f"--count={label}=0" for label in ("normal", "bacterial", "viral")]]
        args += ["--folds", "2", "--image-size", "32", "--workers", "1", "--seed", seed]
        args += ["--radiography", str(data / "radiography"), "--radiography-count", "5"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        manifest = pd.read_csv(tmp_path / out / "manifest.csv")
        chosen.append(sorted(manifest.loc[manifest.cohort == "radiography", "number"]))
    # 5 drawn of the 14 BIMCV-range files, then any copy of an ieee8023 film among them dropped
    assert 3 <= len(chosen[0]) <= 5 and set(chosen[0]) <= set(range(1894, 1906))
    assert chosen[0] == chosen[1] != chosen[2]
    alone = runner.invoke(
        app, ["data", "prepare", "--data", str(data), "--out", str(tmp_path / "d"), "--radiography-count", "5"]
    )
    assert alone.exit_code == 2 and "--radiography-count needs --radiography DIR" in alone.output


def test_fetch_says_where_to_get_the_database_and_where_to_put_it(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["data", "fetch", "--data", str(tmp_path), "--source", "radiography"])
    assert missing.exit_code == 1
    assert "kaggle.com/datasets/tawsifurrahman/covid19-radiography-database" in missing.output
    assert f"put it at:   {tmp_path / 'radiography'}/" in missing.output
    assert "radiography: cannot be downloaded here; get it by hand" in missing.output
    v4_tree(tmp_path / "radiography", [1900])
    present = runner.invoke(app, ["data", "fetch", "--data", str(tmp_path), "--source", "radiography"])
    assert present.exit_code == 0 and "radiography: present at" in present.output
