"""Readers for each public chest X-ray source, one small module each, one table out.

>>> from coronet.data.sources import read_source
>>> table = read_source("kaggle", "/data/kaggle-pneumonia")   # doctest: +SKIP

:data:`SOURCES` holds one :class:`SourceSpec` per source (folder, reader, options, download,
title). Every reader returns the columns :data:`COLUMNS`: ``path, label, source,
patient_id, view, split`` (``patient_id`` is prefixed by the source name so ids
never collide across sources).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .base import COLUMNS, LABELS, RemoteSource, canonical_label
from .cohen import DEFAULT_VIEWS, read_cohen
from .folder import read_folder
from .kaggle import parse_kaggle_name, read_kaggle
from .negatives import read_source_negatives
from .ozturk import FOLDERS as OZTURK_FOLDERS
from .ozturk import read_ozturk
from .radiography import read_radiography


@dataclass(frozen=True)
class SourceSpec:
    """Everything about one public source, in one place: where it lives, how it is read, where it comes from.

    name: the source's name (``--source``, manifest ``source`` column, patient id prefix).
    folder: its folder under the data directory.
    reader: ``reader(root, **options) -> table`` (columns :data:`COLUMNS`).
    title, homepage: what users are told when it is missing.
    remote: where ``coronet data fetch`` downloads it (None: by hand only).
    options: the reader's default options (``PrepareConfig.source_options`` overrides them).
    related: reader options that name another source's folder, e.g. ``{"cohen_root": "cohen"}``.
    A new source is one ``register_source(SourceSpec(...))``.
    """

    name: str
    folder: str
    reader: Callable[..., pd.DataFrame]
    title: str
    homepage: str = ""
    remote: RemoteSource | None = None
    options: Mapping[str, object] = field(default_factory=dict)
    related: Mapping[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def download(self) -> RemoteSource:
        """Where ``coronet data fetch`` gets it; ``ValueError`` for a source to be got by hand."""
        if self.remote is None:
            raise ValueError(f"{self.name}: no download address; get it by hand from {self.homepage or 'its authors'}")
        return self.remote


#: Every source, by name.
SOURCES: dict[str, SourceSpec] = {}


def register_source(spec: SourceSpec) -> SourceSpec:
    SOURCES[spec.name] = spec
    return spec


# Downloads are pinned: the GitHub sources are archives of fixed commits (the commits this project's data was
# taken from, shared/data/README.md), not of a moving branch, and the Mendeley file is one version of its record.
# Checksums: none of the three archives has a published SHA-256, and none could be computed where this was written
# (no network there), so ``sha256`` is None for each: fetch computes the archive's SHA-256, prints it and records it
# in .downloads/<name>.json (and checks a reused archive against that record), but verifies it against nothing.
# Put a hash here once it is known and fetch refuses any other bytes. GitHub makes commit archives on the fly and
# does not promise they stay byte-identical, so a pinned commit fixes the content, not necessarily the zip's hash.
register_source(
    SourceSpec(
        "cohen",
        "cohen-covid",
        read_cohen,
        "ieee8023 COVID-19 image data collection (Cohen et al.)",
        "https://github.com/ieee8023/covid-chestxray-dataset",
        # The GeneralBlockchain bounding-boxes repository at 103688cb (2020-08-04): a verbatim copy of the
        # ieee8023 collection's images/ and metadata.csv as of mid-2020, the copy this project's cohen-covid/ was
        # made from. ieee8023's own repository has kept growing since.
        RemoteSource(
            "https://github.com/GeneralBlockchain/covid-19-chest-xray-lung-bounding-boxes-dataset/archive/"
            "103688cbcdd1bada8900b9a9b17fafa45c7ea368.zip",
            None,  # no published checksum, none computed yet: see above
            (("metadata.csv", "metadata.csv"), ("images", "images")),
        ),
        options={"views": DEFAULT_VIEWS},
    )
)
register_source(
    SourceSpec(
        "kaggle",
        "kaggle-pneumonia",
        read_kaggle,
        'Kermany et al. "Chest X-Ray Images (Pneumonia)", Mendeley Data doi:10.17632/rscbjbr9sj.2',
        "https://data.mendeley.com/datasets/rscbjbr9sj/2",
        # ChestXRay2017.zip of Mendeley Data record rscbjbr9sj version 2 (about 1.2 GB). Mendeley's public-files
        # links are not promised to be stable: if this one moves, pass another URL (--url) or use a mirror.
        RemoteSource(
            "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/"
            "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded",
            None,  # Mendeley publishes no checksum; none computed yet: see above
            (("chest_xray", "chest_xray"),),
        ),
        note="the same images are on Kaggle (paultimothymooney/chest-xray-pneumonia), but Kaggle downloads need an "
        "account and API token",
    )
)
register_source(
    SourceSpec(
        "ozturk",
        "ozturk-dataset2",
        read_ozturk,
        "Ozturk et al. dataset-2 (muhammedtalo/COVID-19)",
        "https://github.com/muhammedtalo/COVID-19",
        # muhammedtalo/COVID-19 at ee3e2cff, the commit this project's ozturk-dataset2/ was made from
        RemoteSource(
            "https://github.com/muhammedtalo/COVID-19/archive/ee3e2cffc0824711bed675275506b26f19be7198.zip",
            None,  # no published checksum, none computed yet: see above
            tuple((f"X-Ray Image DataSet/{f}", f) for f in OZTURK_FOLDERS),
        ),
        # its COVID-19 files are Cohen films: their patients come from Cohen's metadata
        related={"cohen_root": "cohen"},
    )
)
register_source(
    SourceSpec(
        "source-negatives",
        "source-negatives",
        read_source_negatives,
        "adult films without COVID-19 from the positives' own collections (ieee8023 non-COVID, Actualmed normals)",
        "https://github.com/ieee8023/covid-chestxray-dataset",
        note="assembled by hand from the ieee8023 collection and agchung/Actualmed-COVID-chestxray-dataset; "
        "see the data directory's README",
    )
)
register_source(
    SourceSpec(
        "radiography",
        "radiography",
        read_radiography,
        "COVID-19 Radiography Database (Kaggle, tawsifurrahman): its BIMCV-COVID19+ films",
        "https://www.kaggle.com/datasets/tawsifurrahman/covid19-radiography-database",
        # no remote: Kaggle downloads need an account, and BIMCV's licence forbids redistributing the films
        note="Kaggle downloads need an account: download the archive there (browser, or the kaggle CLI with your "
        "API token) and unpack it so that radiography/COVID-19_Radiography_Dataset/COVID/ exists under the data "
        "directory (v4 or v5 layout). BIMCV's licence forbids redistributing these films: keep them out of any "
        "repository",
    )
)


def source_dir(name: str, data_dir: str | Path) -> Path:
    """Where source ``name`` lives under a data directory (``folder``: the data directory itself)."""
    if name == "folder":
        return Path(data_dir)
    return Path(data_dir) / get_source(name).folder


def get_source(name: str) -> SourceSpec:
    """The spec of source ``name``; ``ValueError`` for an unknown one."""
    if name not in SOURCES:
        raise ValueError(f"unknown source {name!r}; choose from {', '.join([*SOURCES, 'folder'])}")
    return SOURCES[name]


def find_source_root(name: str, path: str | os.PathLike, markers: tuple[str, ...] = ()) -> Path:
    """Source ``name``'s own folder, given it (it holds every name in ``markers``), a data directory holding it, or
    one of its marker folders itself (``COVID-19_Radiography_Dataset/``: its parent is the source's folder)."""
    path = Path(path)
    if markers and all((path / marker).is_dir() for marker in markers):
        return path
    if source_dir(name, path).is_dir():
        return source_dir(name, path)
    if path.name in markers and path.is_dir():
        return path.parent
    what = f"folders {', '.join(markers)}" if markers else "its files"
    raise FileNotFoundError(
        f"{path}: neither the {name} source ({what}) nor a data directory holding {get_source(name).folder}/"
    )


def read_source(name: str, root: str | Path, **options) -> pd.DataFrame:
    """Read one source: ``cohen``, ``kaggle``, ``ozturk`` (``root`` is that source's folder) or ``folder``."""
    if name == "folder":
        return read_folder(root, **options)
    return get_source(name).reader(root, **options)


def reader_options(
    name: str,
    data_dir: str | Path,
    overrides: Mapping[str, object] | None = None,
    roots: Mapping[str, str] | None = None,
) -> dict:
    """The options source ``name``'s reader gets: the spec's defaults, ``overrides``, and the folders of
    related sources (``roots`` first, else under ``data_dir``)."""
    if name == "folder":
        return dict(overrides or {})
    spec = get_source(name)
    options = {**spec.options, **(overrides or {})}
    for option, other in spec.related.items():
        options[option] = (roots or {}).get(other) or source_dir(other, data_dir)
    return options


__all__ = [
    "COLUMNS",
    "LABELS",
    "SOURCES",
    "RemoteSource",
    "SourceSpec",
    "get_source",
    "reader_options",
    "register_source",
    "canonical_label",
    "parse_kaggle_name",
    "read_cohen",
    "find_source_root",
    "read_folder",
    "read_kaggle",
    "read_ozturk",
    "read_radiography",
    "read_source",
    "read_source_negatives",
    "source_dir",
]
