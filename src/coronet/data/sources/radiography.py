"""COVID-19 Radiography Database (Chowdhury et al. 2020, Rahman et al. 2021), its BIMCV-COVID19+ films only.

The Database (Kaggle, "COVID-19 Radiography Database") gathers COVID-19 films from several
collections. Only its BIMCV-COVID19+ films (Valencia region, 11 hospitals, clinical CR/DX) are
taken: the rest are web, Hannover and ieee8023 films, many of which ``cohen-covid`` already holds.
``radiography/`` holds ``COVID-19_Radiography_Dataset/`` (or is it) in one of two layouts::

    v4: COVID/COVID-<n>.png                                   no per-file source
    v5: COVID/images/COVID-<n>.png + COVID.metadata.xlsx      FILE NAME, FORMAT, SIZE, URL per file

Which films are BIMCV's (docs/DATA.md has the evidence):

* v5: the metadata's ``URL`` names BIMCV (``bimcv.cipf.es/.../bimcv-covid19``).
* v4: files ``COVID-1894`` ... ``COVID-3616``. v4's own metadata gives BIMCV the numbers from 1143,
  but the images contradict it: 947 of files 1-1893 match COVID-CXNet or Hannover images, interleaved,
  and none of 1894-3616 does. Files 1-1893 are never listed.

The Database has no patient ids, and it numbers BIMCV films in order with one patient's films side by
side (every one of its 31 groups of identical files is a run of consecutive numbers). So a film's
``patient_id`` is its run of :data:`RUN` consecutive numbers (``radiography:2010-2019``): folds and the
bootstrap keep a run together. Its ``Normal/`` films (RSNA and Kermany) are not read.
"""

from __future__ import annotations

import re
import warnings
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pandas as pd

from .base import make_table, require_dir

SOURCE = "radiography"
#: The Database's own folder name (Kaggle's archive unpacks to it).
DATASET = "COVID-19_Radiography_Dataset"
#: v5's per-file metadata of the COVID-19 films, beside ``COVID/``.
METADATA = "COVID.metadata.xlsx"
#: v4: the first file number that is BIMCV's (see the module docstring).
FIRST_BIMCV = 1894
#: Consecutive file numbers grouped as one patient (the Database has no patient ids).
RUN = 10
#: What v5's ``URL`` column holds for a BIMCV-COVID19+ film (case-insensitive).
BIMCV_URL = "bimcv"

_NAME = re.compile(r"^covid-(\d+)$", re.IGNORECASE)


def dataset_folder(root: str | Path) -> Path:
    """The Database's own folder (the one holding ``COVID/``), given it or a folder holding :data:`DATASET`."""
    root = require_dir(Path(root), "COVID-19 Radiography Database folder")
    for folder in (root / DATASET, root):
        if (folder / "COVID").is_dir():
            return folder
    raise FileNotFoundError(f"{root}: no COVID-19 Radiography Database here (expected {DATASET}/COVID/ or COVID/)")


def read_radiography(root: str | Path, first_bimcv: int = FIRST_BIMCV, run: int = RUN) -> pd.DataFrame:
    """Read the BIMCV-COVID19+ films of the COVID-19 Radiography Database at ``root`` (v4 or v5 layout).

    first_bimcv: v4's first BIMCV file number; run: consecutive numbers that make one patient. Extra columns:
    ``number`` (the file's number) and ``url`` (v5's metadata; empty in v4).
    """
    folder = dataset_folder(root)
    images = folder / "COVID" / "images"
    if images.is_dir():
        films, urls = _numbered_films(images), _bimcv_urls(folder / METADATA)
        chosen = {n: path for n, path in films.items() if path.stem.lower() in urls}
        _warn_about_metadata(films, urls, first_bimcv)
    else:
        films, urls = _numbered_films(folder / "COVID"), {}
        chosen = {n: path for n, path in films.items() if n >= first_bimcv}
    rows = [
        {
            "path": str(path),
            "label": "covid",
            "source": SOURCE,
            "patient_id": f"{SOURCE}:{number // run * run}-{number // run * run + run - 1}",
            "view": pd.NA,
            "split": pd.NA,
            "number": number,
            "url": urls.get(path.stem.lower(), ""),
        }
        for number, path in sorted(chosen.items())
    ]
    return make_table(rows, SOURCE)


def _numbered_films(folder: Path) -> dict[int, Path]:
    """``COVID-<n>.png`` files directly in ``folder``, by number (anything else is not a film of the Database)."""
    films = {}
    for path in folder.iterdir():
        match = _NAME.match(path.stem)
        if match and path.suffix.lower() == ".png" and path.is_file():
            films[int(match.group(1))] = path
    return films


def _bimcv_urls(path: Path) -> dict[str, str]:
    """File stem (lower case) -> URL of every metadata row whose URL names BIMCV."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing; the v5 layout (COVID/images/) needs it to tell BIMCV's films from the others"
        )
    rows = read_xlsx(path)
    header = [cell.strip().upper() for cell in rows[0]] if rows else []
    if "FILE NAME" not in header or "URL" not in header:
        raise ValueError(f"{path}: expected the columns FILE NAME and URL in its first row, found {header}")
    name, url = header.index("FILE NAME"), header.index("URL")
    found = {}
    for row in rows[1:]:
        cells = [*row, *[""] * (max(name, url) + 1 - len(row))]
        if BIMCV_URL in cells[url].lower():
            found[Path(cells[name].strip()).stem.lower()] = cells[url].strip()
    return found


def _warn_about_metadata(films: dict[int, Path], urls: dict[str, str], first_bimcv: int) -> None:
    present = {path.stem.lower() for path in films.values()}
    missing = sorted(set(urls) - present)
    if missing:
        warnings.warn(
            f"{SOURCE}: {len(missing)} BIMCV metadata rows have no image file (e.g. {missing[0]})", stacklevel=3
        )
    early = sorted(n for n, path in films.items() if path.stem.lower() in urls and n < first_bimcv)
    if early:
        # v4's metadata gave BIMCV the numbers from 1143, and the images showed 1-1893 to mix in other collections
        warnings.warn(
            f"{SOURCE}: the metadata names {len(early)} films numbered below {first_bimcv} BIMCV's (COVID-{early[0]} "
            "...); in v4 that range mixes BIMCV with web, Hannover and ieee8023 films (docs/DATA.md). Preparation "
            "drops those we hold in another source, not the others",
            stacklevel=3,
        )


# --------------------------------------------------------------------------- the metadata workbook
# An .xlsx file is a zip of XML parts. Reading one four-column sheet needs only the standard library: openpyxl
# (what pandas.read_excel needs) would be a dependency for this one file.
_MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_RELATIONSHIP = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"


def read_xlsx(path: str | Path) -> list[list[str]]:
    """The cells of an .xlsx workbook's first worksheet as text, one list per row (a missing cell is ``""``)."""
    try:
        with zipfile.ZipFile(path) as book:
            parts = set(book.namelist())
            shared = _shared_strings(book) if "xl/sharedStrings.xml" in parts else []
            sheet = ET.fromstring(book.read(_first_sheet(book, parts)))
    except (zipfile.BadZipFile, KeyError, ET.ParseError) as error:
        raise ValueError(f"{path}: not a readable .xlsx workbook ({error})") from None
    rows = []
    for row in sheet.iter(f"{_MAIN}row"):
        cells: dict[int, str] = {}
        for k, cell in enumerate(row.iter(f"{_MAIN}c")):
            reference = cell.get("r")
            column = _column_index(reference) if reference else k
            cells[column] = _cell_text(cell, shared)
        rows.append([cells.get(j, "") for j in range(max(cells) + 1)] if cells else [])
    return rows


def _shared_strings(book: zipfile.ZipFile) -> list[str]:
    root = ET.fromstring(book.read("xl/sharedStrings.xml"))
    # a rich-text string is several runs, each with its own <t>
    return ["".join(t.text or "" for t in item.iter(f"{_MAIN}t")) for item in root.iter(f"{_MAIN}si")]


def _first_sheet(book: zipfile.ZipFile, parts: set[str]) -> str:
    """The part name of the workbook's first sheet (its order in workbook.xml, not its file name)."""
    workbook = ET.fromstring(book.read("xl/workbook.xml"))
    first = next(workbook.iter(f"{_MAIN}sheet"), None)
    if first is not None and "xl/_rels/workbook.xml.rels" in parts:
        relations = ET.fromstring(book.read("xl/_rels/workbook.xml.rels"))
        for relation in relations:
            if relation.get("Id") == first.get(_RELATIONSHIP):
                target = relation.get("Target", "")
                return target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    return "xl/worksheets/sheet1.xml"


def _column_index(reference: str) -> int:
    """``"AB12"`` -> 27 (0-based column of a cell reference)."""
    index = 0
    for char in reference:
        if not char.isalpha():
            break
        index = index * 26 + ord(char.upper()) - ord("A") + 1
    return index - 1


def _cell_text(cell: ET.Element, shared: list[str]) -> str:
    kind = cell.get("t")
    if kind == "inlineStr":
        return "".join(t.text or "" for t in cell.iter(f"{_MAIN}t"))
    value = cell.find(f"{_MAIN}v")
    text = value.text or "" if value is not None else ""
    return shared[int(text)] if kind == "s" and text else text
