"""Source readers: real data counts and ids, and the original downloads' layouts (synthetic trees)."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import write_xray
from coronet.data.sources import COLUMNS, canonical_label, parse_kaggle_name, read_source, source_dir

COHEN_HEADER = "patientid,offset,sex,age,finding,view,modality,date,location,folder,filename,doi,url,license\n"


def test_cohen_real(data_dir):
    table = read_source("cohen", source_dir("cohen", data_dir))
    assert tuple(table.columns[: len(COLUMNS)]) == COLUMNS
    assert len(table) == 423 and set(table.label) == {"covid"}
    assert table.patient_id.nunique() == 261
    assert table.patient_id.str.fullmatch(r"cohen:\d+[a-z]?").all()
    assert table.view.value_counts().to_dict() == {"PA": 212, "AP Supine": 121, "AP": 90}


def test_kaggle_real(data_dir):
    table = read_source("kaggle", source_dir("kaggle", data_dir))
    assert table.label.value_counts().to_dict() == {"normal": 500, "bacterial": 500, "viral": 500}
    assert table.patient_id.notna().all() and (table.split == "train").all()
    pneumonia = table[table.label != "normal"]
    assert pneumonia.patient_id.str.fullmatch(r"kaggle:person\d+").all()
    assert table[table.label == "normal"].patient_id.str.fullmatch(r"kaggle:(NORMAL2-)?IM-\d+").all()
    # labels agree with the file names, patients with the shared copy's own manifest
    manifest = pd.read_csv(data_dir / "kaggle-pneumonia" / "manifest.csv", dtype=str)
    expected = dict(zip(manifest.filename, "kaggle:" + manifest.patient_id))
    assert (table.path.map(lambda p: expected[p.rsplit("/", 1)[1]]) == table.patient_id).all()
    assert table.source_variant.value_counts().to_dict() == {"original": 1192, "uploader_resized_224x224_RGB": 308}


def test_ozturk_real(data_dir):
    table = read_source("ozturk", source_dir("ozturk", data_dir))
    assert table.label.value_counts().to_dict() == {"normal": 500, "pneumonia": 500, "covid": 125}
    chestxray8 = table[table.label != "covid"]
    assert chestxray8.patient_id.str.fullmatch(r"ozturk:\d{8}").all()


@pytest.mark.parametrize(
    "name,folder,expected",
    [
        ("person1430_bacteria_3695.jpeg", "PNEUMONIA", ("bacterial", "person1430")),
        ("person12_virus_48.jpeg", "PNEUMONIA", ("viral", "person12")),
        ("IM-0117-0001.jpeg", "NORMAL", ("normal", "IM-0117")),
        ("IM-0439-0001-0001.jpeg", "NORMAL", ("normal", "IM-0439")),
        ("NORMAL2-IM-0027-0001.jpeg", "NORMAL", ("normal", "NORMAL2-IM-0027")),
    ],
)
def test_parse_kaggle_name(name, folder, expected):
    assert parse_kaggle_name(name, folder) == expected


def test_parse_kaggle_name_rejects_unknown():
    with pytest.raises(ValueError, match="scan.jpeg"):
        parse_kaggle_name("scan.jpeg", "PNEUMONIA")


def test_kaggle_original_layout(tmp_path):
    """The full Kermany download: .jpeg names, train/test/val splits, stray files ignored."""
    base = tmp_path / "chest_xray"
    write_xray(base / "train" / "NORMAL" / "IM-0001-0001.jpeg", 1)
    write_xray(base / "train" / "NORMAL" / "NORMAL2-IM-0001-0001.jpeg", 2)
    write_xray(base / "test" / "PNEUMONIA" / "person1_bacteria_1.jpeg", 3)
    write_xray(base / "val" / "PNEUMONIA" / "person1_virus_2.jpeg", 4)
    (base / "train" / "NORMAL" / ".DS_Store").write_text("x")
    table = read_source("kaggle", tmp_path)
    assert list(table.label) == ["bacterial", "normal", "normal", "viral"]
    assert list(table.split) == ["test", "train", "train", "val"]
    assert table.patient_id.tolist() == ["kaggle:person1", "kaggle:IM-0001", "kaggle:NORMAL2-IM-0001", "kaggle:person1"]


def test_cohen_original_layout(tmp_path):
    """The ieee8023 checkout: .jpeg/.png names, non-COVID findings, CT and lateral rows all present."""
    rows = [
        "1,0,M,60,COVID-19,PA,X-ray,,,images,a.jpeg,,,",
        "1,3,M,60,Pneumonia/Viral/COVID-19,AP Supine,X-ray,,,images,b.png,,,",
        "2,0,F,50,COVID-19,L,X-ray,,,images,lateral.png,,,",
        "3,0,F,50,COVID-19,Axial,CT,,,volumes,ct.nii.gz,,,",
        "4,0,F,50,SARS,PA,X-ray,,,images,sars.png,,,",
        "5,0,F,50,COVID-19,AP,X-ray,,,images,missing.png,,,",
    ]
    (tmp_path / "metadata.csv").write_text(COHEN_HEADER + "\n".join(rows) + "\n")
    for name in ("a.jpeg", "b.png", "lateral.png", "sars.png"):
        write_xray(tmp_path / "images" / name)
    with pytest.warns(UserWarning, match="1 metadata rows have no image"):
        table = read_source("cohen", tmp_path)
    assert [p.rsplit("/", 1)[1] for p in table.path] == ["a.jpeg", "b.png"]
    assert table.patient_id.tolist() == ["cohen:1", "cohen:1"]
    only_pa = read_source("cohen", tmp_path, views=["PA"])
    assert len(only_pa) == 1


def test_ozturk_original_layout(tmp_path):
    write_xray(tmp_path / "Covid-19" / "covid-1.png")
    write_xray(tmp_path / "No_findings" / "00002658_001.png")
    write_xray(tmp_path / "No_findings" / "00002658_002.png")
    write_xray(tmp_path / "Pneumonia" / "00000013_005.png")
    table = read_source("ozturk", tmp_path)
    assert table.label.tolist() == ["covid", "normal", "normal", "pneumonia"]
    assert table.patient_id.tolist() == ["ozturk:covid-1", "ozturk:00002658", "ozturk:00002658", "ozturk:00000013"]


def test_folder_reader(tmp_path):
    write_xray(tmp_path / "COVID-19" / "site1" / "p1_a.png")
    write_xray(tmp_path / "Normal" / "p2_a.jpg")
    write_xray(tmp_path / "unrelated" / "x.png")
    table = read_source("folder", tmp_path, patient_from=r"^(p\d+)_")
    assert table.label.tolist() == ["covid", "normal"]
    assert table.patient_id.tolist() == ["folder:p1", "folder:p2"]
    mapped = read_source("folder", tmp_path, label_map={"unrelated": "pneumonia"})
    assert mapped.label.tolist() == ["pneumonia"]


def test_canonical_label():
    assert canonical_label("Covid-19") == "covid"
    assert canonical_label("No_findings") == "normal"
    with pytest.raises(ValueError, match="unknown class"):
        canonical_label("tuberculosis")


def test_missing_source_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="chest-xray-pneumonia"):
        read_source("kaggle", tmp_path / "nope")


def test_dataset2_covid_copies_get_their_cohen_patient(data_dir):
    from coronet.data.sources import read_ozturk

    plain = read_ozturk(data_dir / "ozturk-dataset2")
    linked = read_ozturk(data_dir / "ozturk-dataset2", cohen_root=data_dir / "cohen-covid")
    covid = linked[linked.label == "covid"]
    assert covid.patient_id.str.startswith("cohen:").sum() >= 110  # 121 of 125 names are Cohen's
    assert (plain[plain.label == "covid"].patient_id.str.startswith("ozturk:")).all()
    assert covid.patient_id.value_counts().max() > 1  # some Cohen patients have several films in dataset-2
    assert (linked[linked.label != "covid"].patient_id == plain[plain.label != "covid"].patient_id).all()
