"""``coronet data ...``: get and prepare the public sources."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import resolve_data_dir
from ._app import (
    AdultNegativesDir,
    AdultPerClassOption,
    CountOption,
    DataOption,
    FoldCountOption,
    RadiographyCountOption,
    RadiographyDir,
    SourceName,
    SourceNegativesDir,
    Split,
    data_app,
    fail,
    parse_counts,
    parse_pairs,
    require_sources,
    value,
)


@data_app.command("prepare")
def data_prepare(
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    data: DataOption = None,
    folds: FoldCountOption = 4,
    split: Annotated[
        Split, typer.Option(help="'patient' (grouped by patient id) or 'image' (the paper's).")
    ] = Split.patient,
    seed: Annotated[int, typer.Option(help="Seed for under-sampling and folds.")] = 0,
    image_size: Annotated[int, typer.Option(help="Side of the cached, resized images.")] = 150,
    source: Annotated[Optional[list[SourceName]], typer.Option(help="Sources to read (repeatable).")] = None,
    count: CountOption = None,
    workers: Annotated[int, typer.Option(help="Decoding processes.")] = 2,
    adult_negatives: AdultNegativesDir = None,
    adult_per_class: AdultPerClassOption = None,
    source_negatives: SourceNegativesDir = None,
    radiography: RadiographyDir = None,
    radiography_count: RadiographyCountOption = None,
):
    """Select the paper's dataset (Table I), remove duplicates, assign folds, and cache decoded images."""
    from ..data.prepare import PrepareConfig, prepare_dataset
    from ..data.sources import LABELS

    if radiography_count is not None and radiography is None:
        fail("--radiography-count needs --radiography DIR")
    data_dir = resolve_data_dir(data)
    sources = tuple(value(s) for s in source) if source else ("cohen", "kaggle")
    require_sources(data_dir, sources)
    counts = parse_counts(count, LABELS)
    config = PrepareConfig(
        sources=sources,
        class_counts=counts,
        folds=folds,
        split=value(split),
        seed=seed,
        image_size=image_size,
        workers=workers,
        cohorts={
            name: str(folder)
            for name, folder in (("adult", adult_negatives), ("source", source_negatives), ("radiography", radiography))
            if folder
        },
        cohort_per_class={"adult": adult_per_class, "radiography": radiography_count},
    )
    prepare_dataset(data_dir, out, config)


@data_app.command("fetch")
def data_fetch(
    data: DataOption = None,
    source: Annotated[
        Optional[list[str]],
        typer.Option(
            help="cohen, kaggle, ozturk (repeatable; default all). A source got by hand (radiography, "
            "source-negatives): where to get it and where to put it."
        ),
    ] = None,
    url: Annotated[Optional[list[str]], typer.Option(help="Override a download address as NAME=URL.")] = None,
    force: Annotated[bool, typer.Option(help="Download and install again even if present.")] = False,
):
    """Download the public sources into the data directory (checksummed, resumable)."""
    from ..data.fetch import FetchError, fetch_sources

    urls = parse_pairs(url, "--url", "NAME=URL")
    try:
        fetch_sources(resolve_data_dir(data), source or None, urls=urls, force=force)
    except FetchError as error:
        fail(str(error), code=1)
