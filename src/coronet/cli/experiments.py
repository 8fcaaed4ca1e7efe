"""Training and evaluation experiments: ``cv``, ``train``, ``report``, ``finetune``, ``evaluate``,
``reproduce``, ``compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import resolve_data_dir
from ..layout import PREDICTIONS, AuditDir, RunDir
from ._app import (
    TRAINING_OPTIONS,
    AcceleratorOption,
    AdultNegativesFlag,
    AdultPerClassOption,
    AuditFlag,
    AuditRetrainOption,
    BackboneOption,
    BatchSizeOption,
    BootstrapOption,
    ConfigFileOption,
    CountOption,
    DataOption,
    Dataset2Option,
    Dataset2PerClassOption,
    DatasetOption,
    DeconfoundOption,
    DevicesOption,
    EpochsOption,
    FinalOption,
    FinetuneProfile,
    FoldCountOption,
    FoldsOption,
    LeaveOutOption,
    LoggerOption,
    PrecisionOption,
    Profile,
    ProfileOption,
    ProgressOption,
    RadiographyCountOption,
    RadiographyFlag,
    ReproduceProfileOption,
    ResumeOption,
    RunOutOption,
    Runtime,
    SeedOption,
    SetOption,
    SourceName,
    SourceNegativesFlag,
    StageProgressOption,
    StrategyOption,
    TaskName,
    TrainLayersOption,
    WeightsOption,
    app,
    fail,
    parse_counts,
    parse_folds,
    quiet_lightning,
    require_sources,
    training_config,
    training_overrides,
    value,
)


@app.command("cv")
def cv(
    context: typer.Context,
    dataset: DatasetOption,
    out: RunOutOption,
    profile: ProfileOption = Profile.paper,
    folds: FoldsOption = None,
    resume: ResumeOption = False,
    progress: ProgressOption = True,
    epochs: EpochsOption = None,
    backbone: BackboneOption = None,
    weights: WeightsOption = None,
    precision: PrecisionOption = None,
    devices: DevicesOption = None,
    accelerator: AcceleratorOption = None,
    strategy: StrategyOption = None,
    batch_size: BatchSizeOption = None,
    seed: SeedOption = None,
    logger: LoggerOption = None,
    settings: SetOption = None,
    config_file: ConfigFileOption = None,
    leave_out: LeaveOutOption = None,
):
    """k-fold cross-validation over the prepared dataset's folds: one model and predictions per fold."""
    from ..training.fit import global_rank, run_cv

    overrides = training_overrides(context, (*TRAINING_OPTIONS, "leave_out"))
    config = training_config(profile, overrides)
    fold_list = parse_folds(folds) if folds else None
    quiet_lightning()
    run_cv(dataset, out, config, profile=value(profile), folds=fold_list, resume=resume, progress=progress)
    if config.leave_out and global_rank() == 0:
        from ..evaluation.cohorttest import leave_out_test

        typer.echo(f"held-out {config.leave_out} films, each predicted by its fold's model: {leave_out_test(out)}")


@app.command("train")
def train(
    context: typer.Context,
    dataset: DatasetOption,
    out: Annotated[Path, typer.Option(help="Fold directory to write.")],
    fold: Annotated[int, typer.Option(help="The fold to validate on; the others train.")] = 1,
    profile: ProfileOption = Profile.paper,
    resume: Annotated[bool, typer.Option(help="Continue from OUT/checkpoints/last.ckpt.")] = False,
    progress: ProgressOption = True,
    epochs: EpochsOption = None,
    backbone: BackboneOption = None,
    weights: WeightsOption = None,
    precision: PrecisionOption = None,
    devices: DevicesOption = None,
    accelerator: AcceleratorOption = None,
    strategy: StrategyOption = None,
    batch_size: BatchSizeOption = None,
    seed: SeedOption = None,
    logger: LoggerOption = None,
    settings: SetOption = None,
    config_file: ConfigFileOption = None,
):
    """Train one model: validate on --fold, train on the rest."""
    from ..training.fit import fit_fold

    overrides = training_overrides(context, TRAINING_OPTIONS)
    config = training_config(profile, overrides)
    quiet_lightning()
    result = fit_fold(dataset, fold, out, config, resume=resume, progress=progress)
    typer.echo(f"fold {fold}: validation accuracy {result.accuracy:.4f} on {len(result.predictions)} images -> {out}")


@app.command("report")
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with predictions.csv (coronet cv).")],
    bootstrap: BootstrapOption = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
):
    """The paper's Tables III-VI (as the run allows), figures incl. Fig. 8, 95% intervals and an HTML page."""
    from ..evaluation.report import summary_lines, write_report

    if not RunDir(run_dir).predictions.is_file():
        fail(f"{run_dir}: no {PREDICTIONS} (run `coronet cv` first)")
    summary = write_report(run_dir, n_bootstrap=bootstrap, seed=seed)
    typer.echo(f"report: {RunDir(run_dir).report.html.resolve()}")
    for line in summary_lines(summary):
        typer.echo(line)


@app.command("finetune")
def finetune(
    context: typer.Context,
    source: Annotated[Path, typer.Option("--from", help="A finished 4-class run directory (coronet cv).")],
    out: RunOutOption,
    task: Annotated[
        TaskName, typer.Option(help="The task: 3class, binary (COVID-19 vs Normal), covid-vs-rest.")
    ] = TaskName["3class"],
    profile: Annotated[FinetuneProfile, typer.Option(help="Fine-tuning profile.")] = FinetuneProfile.paper,
    data: Annotated[
        Optional[Path],
        typer.Option(
            "--data", help="Dataset-2 (Ozturk et al.), or a data directory holding it: fine-tune and evaluate there."
        ),
    ] = None,
    folds: FoldsOption = None,
    resume: ResumeOption = False,
    progress: ProgressOption = True,
    epochs: EpochsOption = None,
    train_layers: TrainLayersOption = None,
    precision: PrecisionOption = None,
    devices: DevicesOption = None,
    accelerator: AcceleratorOption = None,
    batch_size: BatchSizeOption = None,
    settings: SetOption = None,
    config_file: ConfigFileOption = None,
):
    """Derive the paper's 3-class / binary model from each fold's 4-class model: new last layer, fine-tuned."""
    from ..training.finetune import finetune as run_finetune

    overrides = training_overrides(
        context, ("epochs", "train_layers", "precision", "devices", "accelerator", "batch_size")
    )
    fold_list = parse_folds(folds) if folds else None
    quiet_lightning()
    run_finetune(
        source,
        out,
        task=value(task),
        profile=value(profile),
        data=data,
        folds=fold_list,
        resume=resume,
        progress=progress,
        **overrides,
    )
    typer.echo(f"fine-tuned run: {out.resolve()}  (coronet report {out})")


@app.command("evaluate")
def evaluate(
    model: Annotated[Path, typer.Option(help="Model directory (model.safetensors + model.json), or its model.json.")],
    data: Annotated[Path, typer.Option(help="Data directory holding the source, or the source's own folder.")],
    out: Annotated[Path, typer.Option(help="Run directory to write (coronet report works on it).")],
    source: Annotated[
        SourceName, typer.Option(help="How to read DATA: a registered source, or folder (one folder per class).")
    ] = SourceName.folder,
    map_: Annotated[
        Optional[list[str]],
        typer.Option(
            "--map",
            help="Model class to data label, as MODEL_CLASS=DATA_LABEL (repeatable; default: identity, or "
            "bacterial+viral=pneumonia for a 3-class dataset).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    runtime: Annotated[
        Runtime,
        typer.Option(help="auto (the model's runtimes.json, else torch), torch, torch-bf16, onnx, onnx-int8."),
    ] = Runtime.auto,
    report: Annotated[bool, typer.Option(help="Write the report (coronet report) afterwards.")] = True,
    training_dataset: Annotated[
        Optional[Path],
        typer.Option(
            help="The prepared dataset the model was trained on: films and patients in it are left out (overlap.csv)."
        ),
    ] = None,
    audit_: Annotated[
        bool,
        typer.Option(
            "--audit",
            help="Also run the shortcut audit's tests 1, 2 and 5 (lungs removed, lungs only, Grad-CAM) "
            "on these films (OUT/audit).",
        ),
    ] = False,
):
    """Predict a whole dataset with a trained model (no training): predictions, then the full report."""
    from ..evaluation.evaluate import evaluate as run_evaluate
    from ..evaluation.report import summary_lines, write_report
    from ..tasks import parse_class_map

    run_evaluate(
        model,
        data,
        value(source),
        out,
        class_map=parse_class_map(map_) if map_ else None,
        batch_size=batch_size,
        runtime=value(runtime),
        training_dataset=training_dataset,
    )
    if report:
        summary = write_report(out)
        typer.echo(f"report: {RunDir(out).report.html.resolve()}")
        for line in summary_lines(summary):
            typer.echo(line)
    if audit_:
        _audit_evaluation(out, model if model.is_dir() else model.parent)


def _audit_evaluation(out: Path, model_dir: Path) -> None:
    """``evaluate --audit``: tests 1, 2 and 5 of the audit on the evaluated films; the page and the verdicts."""
    from ..evaluation.audit import audit_external

    audited = audit_external(out, model_dir)
    typer.echo(f"audit: {RunDir(out).audit.html.resolve()}")
    for text in audited.verdicts.values():
        typer.echo(f"- {text}")


@app.command("reproduce")
def reproduce(
    context: typer.Context,
    out: Annotated[Path, typer.Option(help="Directory for every stage and the overview report.")],
    profile: ReproduceProfileOption = None,
    data: DataOption = None,
    count: CountOption = None,
    folds: FoldCountOption = 4,
    seed: Annotated[int, typer.Option(help="Seed for selection, folds and training.")] = 0,
    dataset2: Dataset2Option = True,
    dataset2_per_class: Dataset2PerClassOption = None,
    final: FinalOption = False,
    adult_negatives: AdultNegativesFlag = False,
    adult_per_class: AdultPerClassOption = None,
    source_negatives: SourceNegativesFlag = False,
    radiography: RadiographyFlag = False,
    radiography_count: RadiographyCountOption = None,
    deconfound: DeconfoundOption = False,
    leave_out: LeaveOutOption = None,
    audit_: AuditFlag = True,
    audit_retrain: AuditRetrainOption = True,
    bootstrap: BootstrapOption = 1000,
    progress: StageProgressOption = True,
    epochs: EpochsOption = None,
    weights: WeightsOption = None,
    precision: PrecisionOption = None,
    devices: DevicesOption = None,
    accelerator: AcceleratorOption = None,
    logger: LoggerOption = None,
    settings: SetOption = None,
    config_file: ConfigFileOption = None,
):
    """The paper end to end: prepare, 4-class CV, 3-class and binary fine-tunes, dataset-2, one report."""
    from ..reproduce import overview_lines
    from ..reproduce import reproduce as run_reproduce

    overrides = training_overrides(
        context, ("epochs", "weights", "precision", "devices", "accelerator", "logger", "leave_out")
    )
    data_dir = resolve_data_dir(data)
    require_sources(data_dir, ("cohen", "kaggle"))
    options = _reproduce_options(context.params)
    quiet_lightning()
    for line in overview_lines(run_reproduce(data_dir, out, options, **overrides)):
        typer.echo(line)


def _reproduce_options(params: dict):
    """``reproduce``'s options (its parameters ``params``) as the library's record; the training settings go apart
    (:func:`training_overrides`). Without ``--profile``: imagenet with ``--weights imagenet``, else fast."""
    from ..paper import TABLE1
    from ..reproduce import ReproduceOptions

    profile = params["profile"]
    return ReproduceOptions(
        profile=value(profile) if profile else ("imagenet" if params["weights"] == "imagenet" else "fast"),
        counts=parse_counts(params["count"], TABLE1),
        folds=params["folds"],
        seed=params["seed"],
        dataset2=params["dataset2"],
        dataset2_per_class=params["dataset2_per_class"],
        n_bootstrap=params["bootstrap"],
        progress=params["progress"],
        final=params["final"],
        adult_negatives=params["adult_negatives"],
        adult_per_class=params["adult_per_class"],
        source_negatives=params["source_negatives"],
        deconfound=params["deconfound"],
        audit=params["audit_"],
        audit_retrain=params["audit_retrain"],
        radiography=params["radiography"],
        radiography_count=params["radiography_count"],
    )


@app.command("audit")
def audit(
    run_dir: Annotated[Path, typer.Argument(help="A finished 4-class run directory (coronet cv).")],
    data: Annotated[
        Optional[Path],
        typer.Option(help="Where the films are, if their recorded paths moved (for the acquisition features)."),
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Audit directory (default RUN_DIR/audit).")] = None,
    lung_box: Annotated[
        Optional[str],
        typer.Option(help="The lung field as X0,Y0,X1,Y1 fractions of the square film (default 0.12,0.08,0.88,0.85)."),
    ] = None,
    masks: Annotated[Optional[Path], typer.Option(help="Per-image lung masks: PNG files named like the films.")] = None,
    retrain: Annotated[bool, typer.Option(help="Test 6: retrain on lungs-removed films (one fold by default).")] = True,
    folds: Annotated[
        Optional[str], typer.Option(help="Folds to retrain for test 6, e.g. 1,2 (default: the first).")
    ] = None,
    bootstrap: BootstrapOption = 1000,
    progress: Annotated[bool, typer.Option(help="Show a progress bar while retraining.")] = True,
):
    """Is it looking at the lungs? Six tests of how much accuracy comes from shortcuts (see docs)."""
    from ..evaluation.audit import AuditConfig, parse_box
    from ..evaluation.audit import audit as run_audit

    config = AuditConfig(
        lung_box=parse_box(lung_box) if lung_box else AuditConfig.lung_box,
        masks=str(masks) if masks else None,
        retrain=retrain,
        retrain_folds=tuple(parse_folds(folds)) if folds else None,
        n_bootstrap=bootstrap,
    )
    if masks is not None and not masks.is_dir():
        raise FileNotFoundError(f"--masks {masks}: no such directory")
    quiet_lightning()
    summary = run_audit(run_dir, out=out, data=data, config=config, progress=progress)
    files = AuditDir(out) if out is not None else RunDir(run_dir).audit
    typer.echo(f"audit: {files.html.resolve()}")
    for text in summary.verdicts.values():
        typer.echo(f"- {text}")


@app.command("compare")
def compare(
    context: typer.Context,
    dataset: DatasetOption,
    out: Annotated[Path, typer.Option(help="Directory for every backbone's runs and the comparison table.")],
    backbone: Annotated[
        Optional[list[str]],
        typer.Option(
            help="timm backbone (repeatable); default: legacy_xception resnet50 densenet121 vgg19 darkcovidnet."
        ),
    ] = None,
    profile: ProfileOption = Profile.quick,
    task: Annotated[
        Optional[list[TaskName]], typer.Option(help="4class, 3class, binary (repeatable; default all).")
    ] = None,
    folds: FoldsOption = None,
    bootstrap: BootstrapOption = 1000,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = False,
    epochs: EpochsOption = None,
    precision: PrecisionOption = None,
    devices: DevicesOption = None,
    accelerator: AcceleratorOption = None,
    settings: SetOption = None,
    config_file: ConfigFileOption = None,
):
    """The paper's Table VII, measured: several backbones through the same folds, profile and report."""
    from ..evaluation.compare import DEFAULT_BACKBONES, TASK_COLUMNS
    from ..evaluation.compare import compare as run_compare

    overrides = training_overrides(context, ("epochs", "precision", "devices", "accelerator"))
    fold_list = parse_folds(folds) if folds else None
    quiet_lightning()
    run_compare(
        dataset,
        out,
        backbones=tuple(backbone or DEFAULT_BACKBONES),
        profile=value(profile),
        tasks=tuple(value(t) for t in task) if task else TASK_COLUMNS,
        folds=fold_list,
        n_bootstrap=bootstrap,
        progress=progress,
        **overrides,
    )
    typer.echo(f"comparison: {(out / 'compare.md').resolve()}")
