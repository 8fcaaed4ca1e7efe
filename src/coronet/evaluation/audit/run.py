"""The audit run end to end: six tests on a cross-validation run, or tests 1, 2 and 5 on an external evaluation."""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ...data.cohorts import table1_rows
from ...data.leaveout import held_out
from ...data.prepare import cache_size, load_cache
from ...layout import AuditDir, DatasetDir, RunDir
from ...models.modeldir import load_model_dir
from ...training.profiles import TrainConfig
from ..metrics import accuracy
from ..pages import write_page
from ..results import AuditResults
from .acquisition import acquisition_features, acquisition_predictions
from .config import AuditConfig
from .gradcam import cam_mass
from .occlusion import lung_masks, occlusion_tests, quiet_lung_masks
from .page import audit_page
from .retrain import retrained_test
from .verdicts import summarise

logger = logging.getLogger(__name__)


def audit(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    config: AuditConfig | None = None,
    progress: bool = False,
) -> AuditResults:
    """Run the six tests on the finished 4-class cross-validation ``run_dir``; write ``out``; return the results."""
    config = config or AuditConfig()
    run = RunDir(run_dir)
    files = AuditDir(Path(out)) if out is not None else run.audit
    record = run.read_config()
    train = TrainConfig.from_dict(record["train"])
    dataset = DatasetDir(Path(record["dataset"]["path"]))  # what run.dataset gives, without reading the config again
    folds = [int(f) for f in record["folds"]]
    everything = run.read_manifest()  # the run's training data, adult negatives included
    # the films every test predicts: the cross-validated Table I rows (a held-out collection is tested apart)
    manifest = table1_rows(everything[~held_out(everything, train.leave_out)])
    manifest = manifest[manifest["fold"].isin(folds)].reset_index(drop=True)
    intact = table1_rows(pd.read_csv(run.predictions))
    missing = run.folds_without_model(folds)
    if missing:
        raise FileNotFoundError(f"{run.path}: folds {missing} have no trained model (run `coronet cv` first)")
    files.path.mkdir(parents=True, exist_ok=True)
    size = cache_size(dataset.path, train.input_size)
    cache = load_cache(dataset.path, size)
    classes = list(train.classes)

    lungs = lung_masks(list(manifest["path"]), size, config)
    images = np.asarray(cache[manifest["cache_index"].to_numpy()])
    models = {fold: run.fold(fold).model for fold in folds}
    tests: dict[str, pd.DataFrame] = {"intact": intact, **occlusion_tests(manifest, images, lungs, models)}

    features = acquisition_features(manifest, cache, Path(data) if data else None)
    features.assign(path=manifest["path"].to_numpy()).to_csv(files.acquisition_features, index=False)
    tests["acquisition"] = acquisition_predictions(manifest, features, classes, seed=config.seed)
    logger.info(f"audit: acquisition features alone: accuracy {accuracy(tests['acquisition']):.3f}")

    retrain_folds = list(config.retrain_folds or folds[:1]) if config.retrain else []
    if retrain_folds:
        training = everything[everything["fold"].isin(folds)].reset_index(drop=True)
        tests["retrained-lungs-removed"] = retrained_test(
            dataset, files, training, cache, size, train, retrain_folds, config, progress
        )

    lungs_of = functools.partial(quiet_lung_masks, config=config)
    cam_table, cam_figure = cam_mass(run.path, manifest, intact, cache, lungs_of, config, files.path)
    results = summarise(tests, manifest["label"], cam_table, config, lungs, classes, retrain_folds)
    results.run, results.config = str(run.path.resolve()), config.record()
    _write_audit(files, tests, cam_table, results, cam_figure)
    return results


def audit_external(
    run_dir: str | os.PathLike,
    model_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    config: AuditConfig | None = None,
) -> AuditResults:
    """Tests 1, 2 and 5 on an external evaluation (``coronet evaluate --audit``): one model, its run's films.

    The films are read from the evaluation's ``predictions.csv`` paths, resized as prediction does.
    """
    from ...data.imageio import read_image, resize_square

    config = config or AuditConfig(retrain=False)
    run = RunDir(run_dir)
    files = AuditDir(Path(out)) if out is not None else run.audit
    files.path.mkdir(parents=True, exist_ok=True)
    intact = pd.read_csv(run.predictions)
    model_dir = Path(model_dir)
    card = load_model_dir(model_dir)[1]
    size = int(card["input_size"])
    images = np.stack([resize_square(read_image(p), size) for p in intact["path"]])
    manifest = intact[["path", "patient_id", "fold", "label"]].copy()
    manifest["cache_index"] = np.arange(len(manifest))
    manifest["fold"] = 1  # one model predicts every film
    lungs = lung_masks(list(manifest["path"]), size, config)
    occluded = occlusion_tests(manifest, images, lungs, {1: model_dir}, labels=sorted(set(intact["label"])))
    tests: dict[str, pd.DataFrame] = {"intact": intact, **occluded}
    lungs_of = functools.partial(quiet_lung_masks, config=config)
    cam_table, cam_figure = cam_mass(None, manifest, intact, images, lungs_of, config, files.path, {1: model_dir})
    results = summarise(
        tests, intact["label"], cam_table, config, lungs, list(card["classes"]), external=True, run=run.path
    )
    _write_audit(files, tests, cam_table, results, cam_figure)
    return results


def _write_audit(
    files: AuditDir,
    tests: dict[str, pd.DataFrame],
    cam_table: pd.DataFrame,
    results: AuditResults,
    cam_figure: Path | None,
) -> None:
    """Every test's predictions, the Grad-CAM mass, ``audit.json`` and the pages."""
    for name, table in tests.items():
        if name != "intact":
            table.to_csv(files.predictions(name), index=False)
    cam_table.to_csv(files.gradcam_mass, index=False)
    files.summary.write_text(json.dumps(results.to_json(), indent=2, default=float) + "\n")
    write_page(audit_page(results, cam_figure), files.markdown, files.html)
