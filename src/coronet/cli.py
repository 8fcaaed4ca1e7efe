"""The ``coronet`` command. Each sub-command is a thin shell over one module's function."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .config import resolve_data_dir
from .model import WeightsError

app = typer.Typer(help="CoroNet: COVID-19 chest X-ray classification, reproduced and made usable.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Get and prepare the public chest X-ray data.", no_args_is_help=True)
app.add_typer(data_app, name="data")

DataOption = Annotated[Optional[Path], typer.Option(
    "--data", help="Data directory (default: $CORONET_DATA, else ~/.local/share/coronet/data).")]


def fail(message: str, code: int = 2) -> None:
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def require_sources(data_dir: Path, names) -> None:
    """Exit with a helpful message when a source folder is missing from the data directory."""
    from .fetch import missing_data_help
    from .sources import source_dir

    if not all(source_dir(name, data_dir).is_dir() for name in names):
        fail(missing_data_help(data_dir))


@data_app.command("prepare")
def data_prepare(
    out: Annotated[Path, typer.Option(help="Dataset directory to write.")],
    data: DataOption = None,
    folds: Annotated[int, typer.Option(help="Number of cross-validation folds.")] = 4,
    split: Annotated[str, typer.Option(help="'patient' (grouped by patient id) or 'image' (the paper's).")] = "patient",
    seed: Annotated[int, typer.Option(help="Seed for under-sampling and folds.")] = 0,
    image_size: Annotated[int, typer.Option(help="Side of the cached, resized images.")] = 150,
    source: Annotated[Optional[list[str]], typer.Option(help="Sources to read (repeatable).")] = None,
    count: Annotated[Optional[list[str]], typer.Option(
        help="Per-class target as LABEL=N (repeatable); default: the paper's Table I.")] = None,
    workers: Annotated[int, typer.Option(help="Decoding processes.")] = 2,
):
    """Select the paper's dataset (Table I), remove duplicates, assign folds, and cache decoded images."""
    from .prepare import PAPER_CLASS_COUNTS, PrepareConfig, prepare_dataset

    data_dir = resolve_data_dir(data)
    sources = tuple(source or ("cohen", "kaggle"))
    require_sources(data_dir, sources)
    counts = dict(PAPER_CLASS_COUNTS)
    for item in count or []:
        label, _, number = item.partition("=")
        if not number.isdigit():
            fail(f"--count {item!r}: expected LABEL=N")
        counts[label] = int(number)
    try:
        config = PrepareConfig(sources=sources, class_counts=counts, folds=folds, split=split, seed=seed,
                               image_size=image_size, workers=workers)
    except ValueError as error:
        fail(str(error))
    prepare_dataset(data_dir, out, config)


@data_app.command("fetch")
def data_fetch(
    data: DataOption = None,
    source: Annotated[Optional[list[str]], typer.Option(help="cohen, kaggle, ozturk (repeatable; default all).")] = None,
    url: Annotated[Optional[list[str]], typer.Option(help="Override a download address as NAME=URL.")] = None,
    force: Annotated[bool, typer.Option(help="Download and install again even if present.")] = False,
):
    """Download the public sources into the data directory (checksummed, resumable)."""
    from .fetch import FetchError, fetch_sources

    urls = dict(item.split("=", 1) for item in url or [])
    try:
        fetch_sources(resolve_data_dir(data), source or None, urls=urls, force=force)
    except FetchError as error:
        fail(str(error), code=1)


ProfileOption = Annotated[str, typer.Option(help="Settings profile: paper, quick or tiny.")]
EpochsOption = Annotated[Optional[int], typer.Option(help="Override the profile's number of epochs.")]
BackboneOption = Annotated[Optional[str], typer.Option(help="timm backbone (legacy_xception, resnet50, ...).")]
WeightsOption = Annotated[Optional[str], typer.Option(help="Initial backbone weights: none, imagenet or a PATH.")]
PrecisionOption = Annotated[Optional[str], typer.Option(help="auto, 32, bf16-mixed, 16-mixed.")]
DevicesOption = Annotated[Optional[str], typer.Option(help="Lightning devices: 1, 2, auto, 0,1 ...")]
AcceleratorOption = Annotated[Optional[str], typer.Option(help="auto, cpu, gpu ...")]
StrategyOption = Annotated[Optional[str], typer.Option(help="Lightning strategy: auto, ddp, ddp_spawn ...")]
BatchSizeOption = Annotated[Optional[int], typer.Option(help="Override the batch size.")]
SeedOption = Annotated[Optional[int], typer.Option(help="Override the training seed.")]


def training_config(profile: str, **overrides):
    """The named profile with the command line's explicit settings on top."""
    from .profiles import get_profile

    try:
        return get_profile(profile).with_overrides(**overrides)
    except ValueError as error:
        fail(str(error))


def quiet_lightning() -> None:
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*treespec.*")


@app.command("cv")
def cv(
    dataset: Annotated[Path, typer.Option(help="Prepared dataset directory (coronet data prepare).")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    profile: ProfileOption = "paper",
    folds: Annotated[Optional[str], typer.Option(help="Comma-separated folds to run (default: all).")] = None,
    epochs: EpochsOption = None,
    backbone: BackboneOption = None,
    weights: WeightsOption = None,
    precision: PrecisionOption = None,
    devices: DevicesOption = None,
    accelerator: AcceleratorOption = None,
    strategy: StrategyOption = None,
    batch_size: BatchSizeOption = None,
    seed: SeedOption = None,
    resume: Annotated[bool, typer.Option(help="Keep finished folds; continue interrupted ones.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
):
    """k-fold cross-validation over the prepared dataset's folds: one model and predictions per fold."""
    from .training import run_cv

    config = training_config(profile, epochs=epochs, backbone=backbone, weights=weights, precision=precision,
                             devices=devices, accelerator=accelerator, strategy=strategy, batch_size=batch_size,
                             seed=seed)
    fold_list = [int(f) for f in folds.split(",")] if folds else None
    quiet_lightning()
    try:
        run_cv(dataset, out, config, profile=profile, folds=fold_list, resume=resume, progress=progress)
    except (ValueError, FileNotFoundError, WeightsError) as error:
        fail(str(error))


@app.command("train")
def train(
    dataset: Annotated[Path, typer.Option(help="Prepared dataset directory (coronet data prepare).")],
    out: Annotated[Path, typer.Option(help="Fold directory to write.")],
    fold: Annotated[int, typer.Option(help="The fold to validate on; the others train.")] = 1,
    profile: ProfileOption = "paper",
    epochs: EpochsOption = None,
    backbone: BackboneOption = None,
    weights: WeightsOption = None,
    precision: PrecisionOption = None,
    devices: DevicesOption = None,
    accelerator: AcceleratorOption = None,
    strategy: StrategyOption = None,
    batch_size: BatchSizeOption = None,
    seed: SeedOption = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoints/last.ckpt.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
):
    """Train one model: validate on --fold, train on the rest."""
    from .training import fit_fold

    config = training_config(profile, epochs=epochs, backbone=backbone, weights=weights, precision=precision,
                             devices=devices, accelerator=accelerator, strategy=strategy, batch_size=batch_size,
                             seed=seed)
    quiet_lightning()
    try:
        result = fit_fold(dataset, fold, out, config, resume=resume, progress=progress)
    except (ValueError, FileNotFoundError, WeightsError) as error:
        fail(str(error))
    typer.echo(f"fold {fold}: validation accuracy {result.accuracy:.4f} on {len(result.predictions)} images -> {out}")


@app.command("report")
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with predictions.csv (coronet cv).")],
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples (over patients) for the intervals.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
):
    """Tables (the paper's III and IV), figures, 95% intervals and an HTML page, from the run's predictions."""
    from .report import summary_lines, write_report

    if not (run_dir / "predictions.csv").is_file():
        fail(f"{run_dir}: no predictions.csv (run `coronet cv` first)")
    summary = write_report(run_dir, n_bootstrap=bootstrap, seed=seed)
    typer.echo(f"report: {(run_dir / 'report' / 'report.html').resolve()}")
    for line in summary_lines(summary):
        typer.echo(line)


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
