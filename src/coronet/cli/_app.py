"""The typer application, and the helpers and option types its command modules share."""

from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import USER_ERRORS, one_line


class GuardedTyper(typer.Typer):
    """Every command runs inside one error boundary: a domain error (``coronet.errors.USER_ERRORS``) becomes
    one red line on stderr and exit status 2; a bug keeps its traceback."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(function):
            @functools.wraps(function)
            def guarded(*call_args, **call_kwargs):
                try:
                    return function(*call_args, **call_kwargs)
                except USER_ERRORS as error:
                    fail(one_line(error))

            register(guarded)
            return function

        return decorator


app = GuardedTyper(
    help="CoroNet: COVID-19 chest X-ray classification, reproduced and made usable.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = GuardedTyper(help="Get and prepare the public chest X-ray data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def choices(name: str, values) -> type[Enum]:
    """A str Enum of ``values`` for a typed option (typer shows and checks the choices)."""
    return Enum(name, {str(v): str(v) for v in values}, type=str)  # type: ignore[return-value]


def value(option):
    """An option's plain value (an Enum member's ``value``; anything else unchanged)."""
    return option.value if isinstance(option, Enum) else option


def parse_pairs(items, what: str = "--map", form: str = "KEY=VALUE") -> dict[str, str]:
    """``["a=b", "c=d"]`` -> ``{"a": "b", "c": "d"}``; an item without ``=`` or with an empty side is an error."""
    pairs = {}
    for item in items or ():
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or not val.strip():
            raise ValueError(f"{what} {item!r}: expected {form}")
        pairs[key.strip()] = val.strip()
    return pairs


DataOption = Annotated[
    Optional[Path],
    typer.Option("--data", help="Data directory (default: $CORONET_DATA, else ~/.local/share/coronet/data)."),
]


def fail(message: str, code: int = 2) -> None:
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def parse_folds(text: str) -> list[int]:
    """``"1,3"`` -> ``[1, 3]``; anything else is a one-line error."""
    try:
        folds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        fail(f"--folds {text!r}: expected fold numbers separated by commas, e.g. 1,2")
    if not folds:
        fail(f"--folds {text!r}: expected at least one fold number")
    return folds


def require_sources(data_dir: Path, names) -> None:
    """Exit with a helpful message when a source folder is missing from the data directory."""
    from ..data.fetch import missing_data_help
    from ..data.sources import source_dir

    if not all(source_dir(name, data_dir).is_dir() for name in names):
        fail(missing_data_help(data_dir))


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
SetOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        help="Any training setting as KEY=VALUE (repeatable), e.g. --set lr=1e-3 --set schedule=onecycle; "
        "the fields of coronet.profiles.TrainConfig.",
    ),
]


def training_config(profile: str, settings: list[str] | None = None, **overrides):
    """The named profile with ``--set`` settings, then the command line's explicit options, on top."""
    from ..training.profiles import get_profile, parse_settings

    try:
        return get_profile(profile).with_overrides(**parse_settings(settings)).with_overrides(**overrides)
    except (ValueError, TypeError) as error:
        fail(str(error))


def quiet_lightning() -> None:
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*treespec.*")
    # the weight average's copy is in eval mode on purpose; the batch hook is the module's by design
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
