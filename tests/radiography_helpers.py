"""Synthetic COVID-19 Radiography Database trees and data directories, made in the tests: the Database's own films
may not be redistributed, so no test fixture holds one."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

BIMCV = "https://bimcv.cipf.es/bimcv-projects/bimcv-covid19/#1590858128006-9e640421-6711"
HANNOVER = "https://github.com/ml-workgroup/covid-19-image-repository/tree/master/png"


def film(seed: int, size: int = 48) -> np.ndarray:
    """A smooth film-like image of its own (distinct seeds are never near-duplicates of each other)."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(size=(size, size)).cumsum(axis=0).cumsum(axis=1)
    return ((pixels - pixels.min()) / np.ptp(pixels) * 255).astype(np.uint8)


def save(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).convert("RGB").save(path)  # the Database's films are RGB PNGs
    return path


def v4_tree(root: Path, numbers) -> Path:
    """``root/COVID-19_Radiography_Dataset/COVID/COVID-<n>.png`` for each number, plus a ``Normal/`` folder."""
    dataset = root / "COVID-19_Radiography_Dataset"
    for n in numbers:
        save(dataset / "COVID" / f"COVID-{n}.png", film(n))
    save(dataset / "Normal" / "Normal-1.png", film(99_999))
    return root


def write_xlsx(path: Path, rows: list[list[str]]) -> Path:
    """A minimal workbook as Excel writes one: shared strings, cell references, the sheet found through the
    workbook's relationships (its part deliberately not named sheet1.xml)."""
    strings = sorted({cell for row in rows for cell in row})
    index = {text: k for k, text in enumerate(strings)}
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    relationships = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    cells = "".join(
        f'<row r="{r + 1}">'
        + "".join(f'<c r="{chr(65 + c)}{r + 1}" t="s"><v>{index[text]}</v></c>' for c, text in enumerate(row))
        + "</row>"
        for r, row in enumerate(rows)
    )
    parts = {
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
        'content-types"/>',
        "xl/workbook.xml": f'<?xml version="1.0"?><workbook xmlns="{main}" xmlns:r="{relationships}"><sheets>'
        '<sheet name="COVID" sheetId="1" r:id="rId7"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
        'package/2006/relationships"><Relationship Id="rId7" Type="worksheet" Target="worksheets/covid.xml"/>'
        "</Relationships>",
        "xl/worksheets/covid.xml": f'<?xml version="1.0"?><worksheet xmlns="{main}"><sheetData>{cells}</sheetData>'
        "</worksheet>",
        "xl/sharedStrings.xml": f'<?xml version="1.0"?><sst xmlns="{main}">'
        + "".join(f"<si><t>{text}</t></si>" for text in strings)
        + "</sst>",
    }
    with zipfile.ZipFile(path, "w") as book:
        for name, text in parts.items():
            book.writestr(name, text)
    return path


def synthetic_data(data: Path, kaggle: bool = False) -> Path:
    """A data directory: a small ieee8023 collection (cohen-covid/), a v4 Database whose BIMCV range holds an
    exact copy of one ieee8023 film (COVID-1906), a resized re-encoding of another (COVID-1907) and 12 films of its
    own (COVID-1894 ... COVID-1905), and with ``kaggle`` six Kermany films of each negative class."""
    rows = []
    for k in range(8):
        save(data / "cohen-covid" / "images" / f"case-{k}.png", film(1000 + k, size=64))
        rows.append({"patientid": str(k), "finding": "Pneumonia/Viral/COVID-19", "modality": "X-ray", "view": "PA"})
        rows[-1]["filename"] = f"case-{k}.png"
    pd.DataFrame(rows).to_csv(data / "cohen-covid" / "metadata.csv", index=False)
    v4_tree(data / "radiography", range(1894, 1906))
    covid = data / "radiography" / "COVID-19_Radiography_Dataset" / "COVID"
    save(covid / "COVID-1906.png", film(1000, size=64))  # the same pixels as case-0
    resized = Image.fromarray(film(1003, size=64)).resize((56, 56), Image.Resampling.LANCZOS)
    save(covid / "COVID-1907.png", np.asarray(resized))  # case-3, resized and re-encoded
    if kaggle:
        train = data / "kaggle-pneumonia" / "chest_xray" / "train"
        for k in range(6):
            save(train / "NORMAL" / f"IM-{k:04d}-0001.jpeg", film(2000 + k, size=64))
            save(train / "PNEUMONIA" / f"person{k}_bacteria_{k}.jpeg", film(3000 + k, size=64))
            save(train / "PNEUMONIA" / f"person{100 + k}_virus_{k}.jpeg", film(4000 + k, size=64))
    return data


def with_negatives(data: Path) -> Path:
    """Add what ``--deconfound`` also needs: dataset-2's adult folders (four films each) and the source negatives
    (two ieee8023 films of each kind, two Actualmed normals), in their own layouts."""
    for folder, seed in (("Covid-19", 5000), ("No_findings", 6000), ("Pneumonia", 7000)):
        for k in range(4):
            save(data / "ozturk-dataset2" / folder / f"{seed // 1000:04d}{k:04d}_000.png", film(seed + k, size=64))
    negatives = data / "source-negatives"
    rows = []
    for n, label in enumerate(("bacterial", "viral", "other")):
        for k in range(2):
            save(negatives / "cohen" / label / f"{label}-{k}.png", film(8000 + 10 * n + k, size=64))
            rows.append({"filename": f"{label}/{label}-{k}.png", "patientid": f"9{n}{k}", "view": "PA"})
    pd.DataFrame(rows).to_csv(negatives / "cohen" / "metadata.csv", index=False)
    for k in range(2):
        save(negatives / "actualmed" / "normal" / f"normal-{k}.png", film(9000 + k, size=64))
    pd.DataFrame({"filename": [f"normal-{k}.png" for k in range(2)], "patientid": ["a0", "a1"]}).to_csv(
        negatives / "actualmed" / "metadata.csv", index=False
    )
    return data
