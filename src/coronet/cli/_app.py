"""The typer application, and the helpers and option types its command modules share."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from enum import Enum
from pathlib import Path
from typing import Annotated, NoReturn, Optional

import typer

from ..errors import USER_ERRORS, one_line


class EchoHandler(logging.Handler):
    """Prints each record's message with ``typer.echo`` as it is logged (so that typer's ``CliRunner``, which swaps
    ``sys.stdout`` during an invocation, sees it): below WARNING to stdout, WARNING and above to stderr; with
    ``err``, everything to stderr (a command whose stdout carries its result)."""

    def __init__(self, err: bool = False):
        super().__init__()
        self.err = err

    def emit(self, record: logging.LogRecord) -> None:
        try:
            typer.echo(self.format(record), err=self.err or record.levelno >= logging.WARNING)
        except Exception:  # logging's rule: a handler never raises
            self.handleError(record)


@contextlib.contextmanager
def echo_logs(err: bool = False):
    """For the duration of one command: the ``coronet`` loggers' records from INFO up printed by an
    :class:`EchoHandler`; the logger's handlers and level are restored afterwards."""
    logger = logging.getLogger("coronet")
    handler, level = EchoHandler(err), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class GuardedTyper(typer.Typer):
    """Every command runs inside one error boundary: a domain error (``coronet.errors.USER_ERRORS``) becomes
    one red line on stderr and exit status 2; a bug keeps its traceback. The library's log lines are printed
    meanwhile (:func:`echo_logs`; ``logs_to_stderr``: all of them on stderr)."""

    def command(self, *args, logs_to_stderr: bool = False, **kwargs):
        register = super().command(*args, **kwargs)

        def decorator(function):
            @functools.wraps(function)
            def guarded(*call_args, **call_kwargs):
                with echo_logs(err=logs_to_stderr):
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
weights_app = GuardedTyper(help="Get and import ImageNet weights (offline once imported).", no_args_is_help=True)
app.add_typer(weights_app, name="weights")


def _print_version(given: bool) -> None:
    if given:
        from .. import __version__

        typer.echo(f"coronet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """CoroNet: COVID-19 chest X-ray classification, reproduced and made usable."""


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


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(message, err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


CountOption = Annotated[
    Optional[list[str]],
    typer.Option(help="Images of a class as LABEL=N (repeatable); default: the paper's Table I."),
]


def parse_counts(items, allowed) -> dict[str, int | None]:
    """The paper's Table I counts with ``--count LABEL=N`` applied; LABEL must be one of ``allowed``."""
    from ..paper import TABLE1

    counts: dict[str, int | None] = dict(TABLE1)
    for item in items or []:
        label, _, number = item.partition("=")
        if label not in allowed or not number.isdigit():
            fail(f"--count {item!r}: expected LABEL=N with LABEL one of {', '.join(allowed)}")
        counts[label] = int(number)
    return counts


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


from ..data.sources import SOURCES  # noqa: E402  (light: the source registry)
from ..tasks import TASKS  # noqa: E402
from ..training.profiles import FINETUNE_PROFILES, PROFILES  # noqa: E402

#: Typed choices: typer lists them in --help and refuses anything else (exit 2).
Profile = choices("Profile", PROFILES)
FinetuneProfile = choices("FinetuneProfile", FINETUNE_PROFILES)
TaskName = choices("TaskName", TASKS)
#: ``auto`` and :data:`coronet.deploy.predict.RUNTIMES` (spelled out: the CLI starts without importing torch).
Runtime = choices("Runtime", ("auto", "torch", "torch-bf16", "onnx", "onnx-int8"))
Split = choices("Split", ("patient", "image"))
TrainLayers = choices("TrainLayers", ("all", "head", "classifier"))
Logger = choices("Logger", ("none", "csv", "tensorboard"))
SourceName = choices("SourceName", [*SOURCES, "folder"])

AdultPerClassOption = Annotated[
    Optional[int], typer.Option(help="With --adult-negatives: this many adult films of each kind (default: all).")
]
RadiographyCountOption = Annotated[
    Optional[int],
    typer.Option(
        help="With --radiography: a seeded sample of this many BIMCV films, drawn before duplicates are dropped "
        "(default: all; reproduce --deconfound --radiography draws 311, which keeps Table I's share of COVID-19 "
        "films beside all adult and source negatives)."
    ),
]
LeaveOutOption = Annotated[
    Optional[str],
    typer.Option(
        help="Leave one collection out: no fold trains or validates on this source's films (the per-source table's "
        "name: cohen, radiography, actualmed ...) or on films sharing a patient or duplicate chain with them; each "
        "is then predicted by its own fold's model (RUN/leave-out/predictions.csv)."
    ),
]
ProfileOption = Annotated[Profile, typer.Option(help="Settings profile (coronet.training.profiles).")]

# The options of `reproduce` alone: what it runs besides the training settings (coronet.reproduce.ReproduceOptions).
ReproduceProfileOption = Annotated[
    Optional[Profile],
    typer.Option(
        help="fast (a working CoroNet from scratch on a CPU), imagenet (fine-tuned from Keras's ImageNet "
        "Xception on a CPU; `make weights` first), paper (the paper's protocol, ImageNet weights), quick "
        "(a few minutes' pipeline check) or tiny (tests). Default: imagenet with --weights imagenet, else fast."
    ),
]
Dataset2Option = Annotated[bool, typer.Option(help="Include dataset-2 (Table VI) when the data holds it.")]
Dataset2PerClassOption = Annotated[
    Optional[int], typer.Option(help="Use this many dataset-2 images per class (default: all).")
]
FinalOption = Annotated[
    bool, typer.Option(help="Also train one 4-class model on every image, for deployment (OUT/final/model).")
]
AdultNegativesFlag = Annotated[
    bool,
    typer.Option(
        help="Train with dataset-2's adult ChestX-ray8 films as extra rows (normal; pneumonia as bacterial-or-"
        "viral), so that 'adult' no longer means COVID-19."
    ),
]
SourceNegativesFlag = Annotated[
    bool,
    typer.Option(
        help="Train with films without COVID-19 from the positives' own collections (source-negatives/: ieee8023 "
        "bacterial, viral, other; Actualmed normal), so that 'ieee8023's look' no longer means COVID-19."
    ),
]
RadiographyFlag = Annotated[
    bool,
    typer.Option(
        help="Train with the BIMCV-COVID19+ films of the COVID-19 Radiography Database (radiography/ under "
        "--data) as COVID-19 rows with folds of their own, so that COVID-19 stops meaning 'ieee8023'."
    ),
]
DeconfoundOption = Annotated[
    bool,
    typer.Option(
        help="The model to use: adult and source negatives (and the BIMCV films where radiography/ is under "
        "--data) and the levers against acquisition shortcuts chosen by measurement "
        "(coronet.training.profiles.DECONFOUND; docs/RECIPES.md)."
    ),
]
AuditFlag = Annotated[bool, typer.Option("--audit/--no-audit", help="Run the shortcut audit on the 4-class run.")]
AuditRetrainOption = Annotated[bool, typer.Option(help="The audit's test 6: retrain one fold on lungs-removed films.")]
StageProgressOption = Annotated[bool, typer.Option(help="Show a progress bar with an ETA for each training stage.")]

# The options of `data prepare` alone: the extra cohorts' folders (coronet.data.cohorts).
AdultNegativesDir = Annotated[
    Optional[Path],
    typer.Option(
        help="Add dataset-2's adult ChestX-ray8 films (its folder, or a data directory holding it) as training "
        "rows with folds of their own: No_findings -> normal, Pneumonia -> pneumonia (bacterial or viral)."
    ),
]
SourceNegativesDir = Annotated[
    Optional[Path],
    typer.Option(
        help="Add films without COVID-19 from the positives' own collections (source-negatives/, or a data "
        "directory holding it) as training rows with folds of their own: ieee8023 bacterial, viral and other "
        "(not COVID-19: a partial label), Actualmed normal."
    ),
]
RadiographyDir = Annotated[
    Optional[Path],
    typer.Option(
        help="Add the BIMCV-COVID19+ films of the COVID-19 Radiography Database (a folder holding "
        "COVID-19_Radiography_Dataset/, that folder itself, or a data directory holding radiography/) as "
        "COVID-19 rows with folds of their own; films that repeat another source's are dropped."
    ),
]

# Options that several commands declare alike.
DatasetOption = Annotated[Path, typer.Option(help="Prepared dataset directory (coronet data prepare).")]
RunOutOption = Annotated[Path, typer.Option(help="Run directory to write.")]
FoldsOption = Annotated[Optional[str], typer.Option(help="Comma-separated folds to run (default: all).")]
FoldCountOption = Annotated[int, typer.Option(help="Number of cross-validation folds.")]
ResumeOption = Annotated[bool, typer.Option(help="Keep finished folds; continue interrupted ones.")]
ProgressOption = Annotated[bool, typer.Option(help="Show a progress bar.")]
BootstrapOption = Annotated[int, typer.Option(help="Bootstrap resamples (over patients) for the intervals.")]
ModelOption = Annotated[
    Path,
    typer.Option("--model", help="Model directory (model.safetensors + model.json), or the path of its model.json."),
]
RuntimeOption = Annotated[
    Runtime,
    typer.Option(
        help="auto: the fastest runtime that passed its accuracy check, as MODEL_DIR/runtimes.json records it for "
        "this machine (`coronet runtimes`), else torch. Or one of them: torch (float32), torch-bf16, onnx (ONNX "
        "Runtime; `coronet export` first), onnx-int8 (`coronet runtimes` builds it)."
    ),
]

# The training settings a command line may name directly, each a TrainConfig field; None: not given. Every other
# setting is --set KEY=VALUE, or a whole file with --config. A command declares those it offers and names them
# to training_overrides, which reads them with --set and --config.
EpochsOption = Annotated[Optional[int], typer.Option(help="Override the profile's number of epochs.")]
BackboneOption = Annotated[Optional[str], typer.Option(help="timm backbone (legacy_xception, resnet50, ...).")]
WeightsOption = Annotated[Optional[str], typer.Option(help="Initial backbone weights: none, imagenet or a PATH.")]
PrecisionOption = Annotated[
    Optional[str], typer.Option(help="auto (bf16 where the hardware has it), 32, bf16-mixed, 16-mixed.")
]
DevicesOption = Annotated[Optional[str], typer.Option(help="Lightning devices: 1, 2, auto, 0,1 ...")]
AcceleratorOption = Annotated[Optional[str], typer.Option(help="auto, cpu, gpu ...")]
StrategyOption = Annotated[Optional[str], typer.Option(help="Lightning strategy: auto, ddp, ddp_spawn ...")]
BatchSizeOption = Annotated[Optional[int], typer.Option(help="Override the batch size.")]
SeedOption = Annotated[Optional[int], typer.Option(help="Override the training seed.")]
TrainLayersOption = Annotated[Optional[TrainLayers], typer.Option(help="What trains: all, head or classifier.")]
LoggerOption = Annotated[
    Optional[Logger],
    typer.Option(help="Also log to Lightning's csv or tensorboard logger (FOLD/logs/): none, csv, tensorboard."),
]
SetOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--set",
        help="Any training setting as KEY=VALUE (repeatable), e.g. --set lr=1e-3 --set schedule=onecycle; "
        "the fields of TrainConfig.",
    ),
]
ConfigFileOption = Annotated[
    Optional[Path],
    typer.Option(
        "--config",
        help="Training settings from a file: JSON (a run's config.json works) or TOML, applied over the profile.",
    ),
]


#: The training options of ``cv`` and ``train``; the fine-tunes, ``reproduce`` and ``compare`` offer fewer.
TRAINING_OPTIONS = (
    "epochs",
    "backbone",
    "weights",
    "precision",
    "devices",
    "accelerator",
    "strategy",
    "batch_size",
    "seed",
    "logger",
)


def training_overrides(context: typer.Context, names: tuple[str, ...]) -> dict:
    """The training settings the user gave this command: ``--config``'s file, then ``--set``'s, then those of the
    options ``names`` (TrainConfig fields the command offers by name), later ones winning. Values come from the
    command's own parameters (``context.params``). An option the user did not give is absent (not None), so
    ``--set train_per_class=none`` can reset a setting."""
    params = context.params
    given = {}
    if params.get("config_file") is not None:
        given.update(settings_from_file(Path(params["config_file"])))
    given.update(parse_settings(params.get("settings")))
    for name in names:
        source = context.get_parameter_source(name)
        if source is not None and source.name != "DEFAULT":  # given on the command line (or in env)
            given[name] = value(params[name])
    return given


def settings_from_file(path: Path) -> dict:
    """Training settings from a JSON file (a run's ``config.json``: its ``train`` part) or a TOML file."""
    import json
    import tomllib

    from ..training.profiles import TrainConfig

    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        data = tomllib.loads(path.read_text()) if path.suffix == ".toml" else json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(
            f"--config {path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} ({error})"
        ) from None
    data = data.get("train", data) if isinstance(data, dict) else {}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - known - {"flips"})
    if unknown:
        raise ValueError(f"--config {path}: unknown settings {unknown}")
    settings = dataclasses.asdict(TrainConfig.from_dict(data))  # validated, tuples restored
    named = (set(data) - {"flips"}) | ({"hflip", "vflip"} if "flips" in data else set())
    return {k: settings[k] for k in named}


def parse_settings(items) -> dict:
    from ..training.profiles import parse_settings as parse

    return parse(items)


def training_config(profile, overrides: dict):
    """The named profile with the command line's settings on top (see :func:`training_overrides`)."""
    from ..training.profiles import get_profile

    return get_profile(value(profile)).with_overrides(**overrides)


def quiet_lightning() -> None:
    import logging
    import warnings

    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*treespec.*")
    # the weight average's copy is in eval mode on purpose; the batch hook is the module's by design
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
    warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
