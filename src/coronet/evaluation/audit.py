"""``coronet audit``: how much of a cross-validated model's accuracy comes from shortcuts, not the lungs.

In the paper's data the label is nearly readable without looking at the lungs: every
normal and pneumonia film is a child's from one hospital (Kermany et al.), every COVID-19
film an adult's, from papers and websites in hundreds of styles. Six tests, each fold's
model only ever seeing its own validation films (nothing leaks):

1. **lungs removed** -- the lung field blacked out in the validation films, predicted by the
   intact models;
2. **lungs only** -- everything but the lung field blacked out;
3. **acquisition features alone** -- a scikit-learn classifier on features that carry no
   diagnosis (size, aspect ratio, mode, bit depth, format, the Kaggle upload variant, border
   and corner intensities, histogram percentiles), on the same patient-grouped folds;
4. **single-source control** -- accuracy among the three Kaggle classes only (one source, one
   age group), and COVID-19 vs the rest (two sources);
5. **where the network looked** -- the share of Grad-CAM mass inside the lung field, per class,
   for correct and wrong predictions (saliency inside the lungs does not prove the absence of
   shortcuts: Viviano et al., ICLR 2021);
6. **retrained with the lungs removed** (Maguolo & Nanni's test, the decisive one) -- a model
   trained with the run's own settings on the run's own training films of the other folds (adult
   negatives included, where the run had them) with the lungs removed, tested on its fold's
   lungs-removed Table I films.

Tests 1 and 2 show films far from anything the models saw in training, so they measure
robustness to occlusion as much as the use of shortcuts; test 6 does not have that problem
and is reported first.

The lung field is a box in relative coordinates, ``x0, y0, x1, y1`` of the square (resized)
film: by default :data:`DEFAULT_LUNG_BOX`, x 12-88 % and y 8-85 %. On a frontal chest film
resized to a square the lungs span roughly the middle three quarters of the width and run
from just below the top edge (the apices, at the clavicles) to the diaphragm domes, about
85 % of the height; the box covers both lung fields with a margin in most films and leaves
the borders, corners, shoulders, labels and markers outside. Per-image masks (PNG, same stem
as the film, non-zero = lung) replace it where given.

Output (``RUN_DIR/audit`` by default): ``audit.json``, ``audit.md``, ``audit.html``, figures,
and ``predictions-<test>.csv`` in the usual predictions layout.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..data.augment import resize_batch
from ..data.cohorts import table1_rows
from ..data.leaveout import held_out
from ..data.prepare import cache_size, load_cache
from ..deploy.predict import Predictor
from ..layout import PROB_PREFIX, AuditDir, DatasetDir, RunDir, classes_of, predictions_table, prob_column
from ..models.modeldir import load_model_dir
from ..tasks import task_of
from ..training.profiles import TrainConfig
from .bootstrap import bootstrap_cis
from .metrics import COVID, accuracy, recall_of
from .pages import Block, Bullets, Figure, Link, Page, Section, Table, Text, write_page
from .results import AuditResults, AuditTestResult, Estimate

logger = logging.getLogger(__name__)

#: x0, y0, x1, y1 as fractions of the square film (see the module docstring for why these).
DEFAULT_LUNG_BOX = (0.12, 0.08, 0.88, 0.85)
TESTS = {
    "retrained-lungs-removed": "6. Retrained with the lungs removed",
    "lungs-removed": "1. Lungs removed (intact models)",
    "lungs-only": "2. Lungs only (intact models)",
    "acquisition": "3. Acquisition features alone (no lungs, no diagnosis)",
}
#: Accuracy differences, in points, that the verdicts use.
NEAR, ABOVE_CHANCE = 0.10, 0.10


@dataclass
class AuditConfig:
    lung_box: tuple[float, float, float, float] = DEFAULT_LUNG_BOX
    masks: str | None = None  # folder of per-image lung masks (PNG, same stem as the film)
    retrain: bool = True  # test 6 (a training run per fold in retrain_folds)
    retrain_folds: tuple[int, ...] | None = None  # default: the run's first fold
    cam_per_group: int = 8  # Grad-CAM films per (class, correct / wrong)
    n_bootstrap: int = 1000
    seed: int = 0

    def __post_init__(self):
        x0, y0, x1, y1 = self.lung_box
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ValueError(f"lung box {self.lung_box}: expected 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"0.12,0.08,0.88,0.85"`` -> a lung box (``ValueError`` unless four numbers in [0, 1], x0 < x1, y0 < y1)."""
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"--lung-box {text!r}: expected four numbers X0,Y0,X1,Y1 in [0, 1]") from None
    if len(box) != 4:
        raise ValueError(f"--lung-box {text!r}: expected four numbers X0,Y0,X1,Y1 in [0, 1]")
    AuditConfig(lung_box=box)  # validates
    return box


# --------------------------------------------------------------------------- occlusion
def box_mask(size: int, box) -> np.ndarray:
    """(size, size) bool: True inside the relative box ``x0, y0, x1, y1``."""
    x0, y0, x1, y1 = (int(round(v * size)) for v in box)
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def lung_masks(paths, size: int, config: AuditConfig, quiet: bool = False) -> np.ndarray:
    """(N, size, size) bool lung fields: the box, or each film's mask file where ``config.masks`` has one."""
    base = box_mask(size, config.lung_box)
    masks = np.repeat(base[None], len(paths), axis=0)
    if config.masks:
        from PIL import Image

        folder, found = Path(config.masks), 0
        for k, path in enumerate(paths):
            candidate = folder / (Path(path).stem + ".png")
            if candidate.is_file():
                with Image.open(candidate) as image:
                    masks[k] = np.asarray(image.convert("L").resize((size, size), Image.Resampling.NEAREST)) > 0
                found += 1
        message = f"lung masks: {found} of {len(paths)} films have one in {folder}; the others use the box"
        logger.log(logging.DEBUG if quiet else logging.INFO, message)
    return masks


def occlude(images: np.ndarray, lungs: np.ndarray, keep: str) -> np.ndarray:
    """Black out the lungs (``keep="outside"``) or everything else (``keep="lungs"``); a copy."""
    if keep not in ("outside", "lungs"):
        raise ValueError(f"keep must be 'outside' or 'lungs', not {keep!r}")
    out = np.array(images, copy=True)
    out[lungs if keep == "outside" else ~lungs] = 0
    return out


def predict_images(model_dir: Path, images: np.ndarray, batch_size: int = 32) -> tuple[np.ndarray, list[str]]:
    """Probabilities (N, C) of uint8 films (N, S, S) with a model directory's network as its card says (preprocessing,
    TTA): :meth:`coronet.deploy.predict.Predictor.run` in float32 PyTorch, the reference every test is read against."""
    predictor = Predictor(model_dir, runtime="torch")
    parts = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start : start + batch_size]))[:, None]
        parts.append(predictor.run(resize_batch(batch.float().div_(255), predictor.input_size).numpy()))
    empty = np.zeros((0, len(predictor.classes)), dtype=np.float32)
    return (np.concatenate(parts) if parts else empty), list(predictor.classes)


# --------------------------------------------------------------------------- acquisition features
def acquisition_features(manifest: pd.DataFrame, cache: np.ndarray, data: Path | None = None) -> pd.DataFrame:
    """Features that carry no diagnosis, one row per manifest row.

    From the file: original width, height, aspect ratio, Pillow mode, bit depth, format. From the
    manifest: the Kaggle ``source_variant`` (original or the uploader's 224 x 224 copy). From the
    cached film: mean and standard deviation of the outer border (5 %) and of each corner
    (10 % square), and global histogram percentiles (1, 5, 25, 50, 75, 95, 99).
    """
    from PIL import Image

    rows = []
    cached = np.asarray(cache[manifest["cache_index"].to_numpy()], dtype=np.float32)
    size = cached.shape[-1]
    border, corner = max(1, size // 20), max(1, size // 10)
    edge = np.zeros((size, size), dtype=bool)
    edge[:border], edge[-border:], edge[:, :border], edge[:, -border:] = True, True, True, True
    for k, row in enumerate(manifest.itertuples(index=False)):
        path = Path(row.path)
        if data is not None and not path.is_file() and isinstance(getattr(row, "relpath", None), str):
            path = Path(data) / row.relpath
        mode, bits, kind = "unknown", np.nan, path.suffix.lower().lstrip(".")
        try:
            with Image.open(path) as image:
                mode, kind = image.mode, (image.format or kind).lower()
                bits = {
                    "1": 1,
                    "L": 8,
                    "P": 8,
                    "RGB": 8,
                    "RGBA": 8,
                    "CMYK": 8,
                    "LA": 8,
                    "I;16": 16,
                    "I": 32,
                    "F": 32,
                }.get(image.mode, np.nan)
        except (OSError, ValueError):
            pass
        height, width = float(getattr(row, "height", np.nan)), float(getattr(row, "width", np.nan))
        film = cached[k]
        features = {
            "width": width,
            "height": height,
            "aspect": width / height if height else np.nan,
            "mode": mode,
            "bit_depth": bits,
            "format": kind,
            "source_variant": str(getattr(row, "source_variant", "") or "none"),
            "border_mean": film[edge].mean(),
            "border_std": film[edge].std(),
        }
        for name, part in (
            ("tl", film[:corner, :corner]),
            ("tr", film[:corner, -corner:]),
            ("bl", film[-corner:, :corner]),
            ("br", film[-corner:, -corner:]),
        ):
            features[f"corner_{name}_mean"], features[f"corner_{name}_std"] = part.mean(), part.std()
        for q, value in zip((1, 5, 25, 50, 75, 95, 99), np.percentile(film, (1, 5, 25, 50, 75, 95, 99))):
            features[f"p{q}"] = value
        rows.append(features)
    frame = pd.DataFrame(rows)
    return pd.get_dummies(frame, columns=["mode", "format", "source_variant"], dtype=float)


def acquisition_predictions(manifest: pd.DataFrame, features: pd.DataFrame, classes, seed: int = 0) -> pd.DataFrame:
    """Fold-wise predictions of a gradient-boosting classifier on ``features`` (trained on the other folds)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    probabilities = np.zeros((len(manifest), len(classes)))
    labels = manifest["label"].map({c: k for k, c in enumerate(classes)}).to_numpy()
    informative = [c for c in features.columns if features[c].notna().any() and features[c].nunique() > 1]
    x = features[informative].to_numpy(dtype=float) if informative else np.zeros((len(features), 1))
    for fold in sorted(manifest["fold"].unique()):
        test = manifest["fold"].to_numpy() == fold
        model = HistGradientBoostingClassifier(random_state=seed, max_iter=200, learning_rate=0.1, early_stopping=False)
        model.fit(x[~test], labels[~test])
        probabilities[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    return predictions_table(manifest, probabilities, list(classes))


# --------------------------------------------------------------------------- Grad-CAM mass
def _explained_classes(model, batch: np.ndarray, predictions: pd.Series, model_classes) -> list[int]:
    """The class index each film's Grad-CAM explains: its prediction, or, where the task merged the model's
    classes (a 4-class model on 3-class films predicts "pneumonia"), the model's own most probable class."""
    if set(predictions) <= set(model_classes):
        return [list(model_classes).index(p) for p in predictions]
    with torch.inference_mode():
        own = model(torch.from_numpy(np.ascontiguousarray(batch))).argmax(1).tolist()
    return [list(model_classes).index(p) if p in model_classes else k for p, k in zip(predictions, own)]


def cam_mass(
    run_dir: Path | None,
    manifest: pd.DataFrame,
    intact: pd.DataFrame,
    cache: np.ndarray,
    lungs_of,
    config: AuditConfig,
    out: Path,
    model_dirs: dict[int, Path] | None = None,
) -> tuple[pd.DataFrame, Path | None]:
    """Share of Grad-CAM mass inside the lung field, per class and correct / wrong, on a seeded sample.

    Fold ``k``'s films are explained by ``model_dirs[k]`` (default: ``run_dir/fold-k/model``).
    """
    from ..deploy.explain import GradCam, overlay
    from .figures import plot_prediction_grid

    prob_columns = [c for c in intact.columns if c.startswith(PROB_PREFIX)]
    merged = manifest.merge(intact[["path", "pred", *prob_columns]], on="path")
    merged["correct"] = merged["pred"] == merged["label"]
    shuffled = merged.sample(frac=1.0, random_state=config.seed)
    sample = shuffled.groupby(["label", "correct"], sort=True).head(config.cam_per_group)
    rows: list[dict] = []
    shown: list[tuple] = []
    for fold, part in sample.groupby("fold"):
        model_dir = (model_dirs or {}).get(fold) or RunDir(Path(run_dir or ".")).fold(fold).model
        model, card = load_model_dir(model_dir)
        cam = GradCam(model, card["input_size"])
        images = np.asarray(cache[part["cache_index"].to_numpy()])
        batch = resize_batch(torch.from_numpy(images)[:, None].float() / 255, card["input_size"]).numpy()
        maps = cam(batch, _explained_classes(model, batch, part["pred"], card["classes"]))
        lungs = lungs_of(part, card["input_size"])
        for k, (row, heat) in enumerate(zip(part.itertuples(index=False), maps)):
            total = float(heat.sum())
            rows.append(
                {
                    "path": row.path,
                    "label": row.label,
                    "pred": row.pred,
                    "correct": bool(row.correct),
                    "fold": fold,
                    "inside": float(heat[lungs[k]].sum() / total) if total > 0 else np.nan,
                }
            )
            if len(shown) < 8 and k < 2:
                shown.append((overlay(images[k], heat), part[prob_columns].to_numpy()[k], row.label, row.path))
    table = pd.DataFrame(rows)
    figure = None
    if shown:
        figure = AuditDir(out).gradcam_examples
        plot_prediction_grid(
            [s[0] for s in shown],
            [c[len(PROB_PREFIX) :] for c in prob_columns],
            np.stack([s[1] for s in shown]),
            figure,
            true_labels=[s[2] for s in shown],
            names=[s[3] for s in shown],
        )
    return table, figure


# --------------------------------------------------------------------------- the audit
#: Tests 1 and 2: what each occlusion keeps of the film.
OCCLUSIONS = (("lungs-removed", "outside"), ("lungs-only", "lungs"))


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
        tests["retrained-lungs-removed"] = _retrained_test(
            dataset, files, training, cache, size, train, retrain_folds, config, progress
        )

    lungs_of = functools.partial(_quiet_lung_masks, config=config)
    cam_table, cam_figure = cam_mass(run.path, manifest, intact, cache, lungs_of, config, files.path)
    results = _summarise(tests, manifest["label"], cam_table, config, lungs, classes, retrain_folds)
    results.run, results.config = str(run.path.resolve()), _config_record(config)
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
    from ..data.imageio import read_image, resize_square

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
    lungs_of = functools.partial(_quiet_lung_masks, config=config)
    cam_table, cam_figure = cam_mass(None, manifest, intact, images, lungs_of, config, files.path, {1: model_dir})
    results = _summarise(
        tests, intact["label"], cam_table, config, lungs, list(card["classes"]), external=True, run=run.path
    )
    _write_audit(files, tests, cam_table, results, cam_figure)
    return results


def occlusion_tests(
    manifest: pd.DataFrame,
    images: np.ndarray,
    lungs: np.ndarray,
    models: dict[int, Path],
    labels: list[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Tests 1 and 2: each fold's films (``manifest`` rows, ``images``) occluded and predicted by its model.

    models: fold -> model directory. labels: the data's labels; a model whose classes do not cover them (a
    4-class model on 3-class data) has its predictions merged into them (:func:`coronet.tasks.default_class_map`).
    """
    tests = {}
    for name, keep in OCCLUSIONS:
        occluded = occlude(images, lungs, keep)
        parts = []
        for fold, model_dir in models.items():
            chosen = (manifest["fold"] == fold).to_numpy()
            probabilities, model_classes = predict_images(model_dir, occluded[chosen])
            table = predictions_table(manifest[chosen], probabilities, model_classes)
            if labels is not None and not set(labels) <= set(model_classes):
                table = _remap_like(table, labels)
            parts.append(table)
        tests[name] = pd.concat(parts, ignore_index=True)
        logger.info(f"audit: {name}: accuracy {accuracy(tests[name]):.3f}")
    return tests


def _quiet_lung_masks(rows: pd.DataFrame, side: int, config: AuditConfig) -> np.ndarray:
    return lung_masks(list(rows["path"]), side, config, quiet=True)


def _retrained_test(
    dataset: DatasetDir,
    files: AuditDir,
    training: pd.DataFrame,
    cache: np.ndarray,
    size: int,
    train: TrainConfig,
    retrain_folds: list[int],
    config: AuditConfig,
    progress: bool,
) -> pd.DataFrame:
    """Test 6: the run's own training data with the lungs removed -- adult negatives too, where the run had
    them -- and its own settings; each retrained fold tested on its Table I films only."""
    from ..training.fit import fit_fold

    training_images = np.asarray(cache[training["cache_index"].to_numpy()])
    training_lungs = lung_masks(list(training["path"]), size, config, quiet=True)
    removed = files.occluded_dataset
    _write_occluded_dataset(dataset, removed, training, occlude(training_images, training_lungs, "outside"), size)
    parts = []
    for fold in retrain_folds:
        logger.info(f"audit: retraining fold {fold} on lungs-removed films ({train.epochs} epochs)")
        result = fit_fold(removed.path, fold, files.retrained(fold).path, train, resume=True, progress=progress)
        parts.append(table1_rows(result.predictions))
    return pd.concat(parts, ignore_index=True)[
        ["path", "patient_id", "fold", "label", *[prob_column(c) for c in train.classes], "pred"]
    ]


def _config_record(config: AuditConfig) -> dict:
    return {**asdict(config), "lung_box": list(config.lung_box)}


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
    write_page(_audit_page(results, cam_figure), files.markdown, files.html)


def _remap_like(table: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """A model's predictions merged into the data's label set (a 4-class model: bacterial + viral = pneumonia)."""
    from ..tasks import default_class_map, merge_probabilities

    classes = classes_of(table)
    mapping = default_class_map(classes, labels)
    merged, merged_labels = merge_probabilities(table[[prob_column(c) for c in classes]].to_numpy(), classes, mapping)
    return predictions_table(table, merged, merged_labels)


def _write_occluded_dataset(
    dataset: DatasetDir, out: DatasetDir, manifest: pd.DataFrame, images: np.ndarray, size: int
) -> None:
    """A prepared dataset whose films are ``images`` (lungs removed): same rows, folds and patients."""
    from ..data.prepare import write_cache

    out.path.mkdir(parents=True, exist_ok=True)
    table = manifest.copy()
    table["cache_index"] = np.arange(len(table))
    if out.exists() and out.manifest.read_text() == table.to_csv(index=False):
        return  # the same occlusion already written (a resumed audit)
    write_cache(out.cache(size), list(images))
    table.to_csv(out.manifest, index=False)
    shutil.copy2(dataset.record, out.record)


def _test_result(table: pd.DataFrame, n: int, seed: int) -> AuditTestResult:
    statistics = {"accuracy": accuracy, "covid_recall": recall_of(COVID)}
    statistics.update({f"recall_{c}": recall_of(c) for c in sorted(set(table["label"]))})
    cis = bootstrap_cis(table, statistics, n=n, seed=seed)
    return AuditTestResult(len(table), {name: Estimate.of(triple) for name, triple in cis.items()})


def _summarise(
    tests: dict[str, pd.DataFrame],
    labels: pd.Series,
    cam_table: pd.DataFrame,
    config: AuditConfig,
    lungs: np.ndarray,
    classes: list[str],
    retrain_folds: list[int] = (),  # type: ignore[assignment]
    external: bool = False,
    run: Path | None = None,
) -> AuditResults:
    """Each test's figures with intervals, the controls, the Grad-CAM mass and the verdicts.

    labels: the tested films' labels (chance is the largest class's share). classes: the model's classes
    (the single-source control compares those other than COVID-19). external: an external evaluation's audit
    (tests 1, 2 and 5 only; ``run``: its directory).
    """
    intact = tests["intact"]
    results = {name: _test_result(table, config.n_bootstrap, config.seed) for name, table in tests.items()}
    if retrain_folds:  # the intact models on the same folds, for a like-for-like comparison
        same = intact[intact["fold"].isin(retrain_folds)]
        results["intact-retrained-folds"] = _test_result(same, config.n_bootstrap, config.seed)
    gradcam = None
    if len(cam_table):
        gradcam = {"mean_inside": float(cam_table["inside"].mean())}
        if not external:
            grouped = cam_table.groupby(["label", "correct"])["inside"].agg(["mean", "count"]).reset_index()
            gradcam["by_class"] = grouped.to_dict(orient="records")
    audited = AuditResults(
        chance=float(labels.value_counts(normalize=True).max()),
        tests=results,
        retrain_folds=list(retrain_folds),
        lung_fraction_of_film=float(lungs.mean()),
        external=external,
        run=str(Path(run or ".").resolve()) if external else None,
        config=_config_record(config) if external else None,
        single_source=None if external else _single_source(intact, classes),
        gradcam=gradcam,
    )
    audited.verdicts = _verdicts(audited)
    return audited


def _single_source(intact: pd.DataFrame, classes: list[str]) -> dict:
    """Test 4, from the intact predictions: accuracy among the classes other than COVID-19 (in the paper's data
    one source, one age group: Kermany's children), and COVID-19 vs the rest (two sources)."""
    others = [c for c in classes if c != COVID]
    rows = intact[intact["label"].isin(others)]
    probs = rows[[prob_column(c) for c in others]].to_numpy()
    predicted = np.array(others)[probs.argmax(axis=1)]
    covid_vs_rest = ((intact["pred"] == COVID) == (intact["label"] == COVID)).mean()
    return {
        "kaggle_3class_accuracy": float((predicted == rows["label"].to_numpy()).mean()),
        "kaggle_images": len(rows),
        "covid_vs_rest_accuracy": float(covid_vs_rest),
        "kaggle_3class_chance": float(rows["label"].value_counts(normalize=True).max()),
    }


def _verdicts(results: AuditResults) -> dict[str, str]:
    t, chance = results.tests, results.chance
    intact = t["intact"].accuracy.value
    verdicts: dict[str, str] = {}
    if "retrained-lungs-removed" in t:
        removed = t["retrained-lungs-removed"].accuracy.value
        reference = t["intact-retrained-folds"].accuracy.value
        if removed >= reference - NEAR:
            text = "most of the accuracy does not need the lungs: the labels are readable from outside them"
        elif removed <= chance + ABOVE_CHANCE:
            text = "without the lungs a model learns little: the accuracy comes from the lung field"
        else:
            text = "a large part of the accuracy survives without the lungs"
        verdicts["retrained-lungs-removed"] = (
            f"Retrained without the lungs: {removed:.3f} vs {reference:.3f} intact on the same folds (chance "
            f"{chance:.3f}); {text} (thresholds: within {NEAR:.2f} of intact, or within {ABOVE_CHANCE:.2f} of chance)."
        )
    removed = t["lungs-removed"].accuracy.value
    verdicts["lungs-removed"] = (
        f"Lungs removed at test time: {removed:.3f} (chance {chance:.3f}); "
        + (
            "well above chance: the models read something outside the lungs"
            if removed > chance + ABOVE_CHANCE
            else "near chance"
        )
        + f" (threshold: chance + {ABOVE_CHANCE:.2f}). Occluded films are far from anything "
        "the models saw, so this measures robustness to occlusion as much as shortcut use."
    )
    only = t["lungs-only"].accuracy.value
    verdicts["lungs-only"] = (
        f"Lungs only: {only:.3f} vs {intact:.3f} intact; "
        + (
            "the lung field alone carries most of the accuracy"
            if only >= intact - NEAR
            else "the models lose much without the rest of the film"
        )
        + f" (threshold: within {NEAR:.2f} of intact)."
    )
    if "acquisition" in t:
        acq = t["acquisition"]
        verdicts["acquisition"] = (
            f"Acquisition features alone: {acq.accuracy.value:.3f}, "
            f"COVID-19 recall {acq.figures['covid_recall'].value:.3f}, vs "
            f"CoroNet {intact:.3f}; "
            + (
                "the labels of this data set can be read without the lungs"
                if acq.accuracy.value >= intact - NEAR
                else "they do not reach CoroNet's accuracy"
            )
            + f" (threshold: within {NEAR:.2f} of CoroNet)."
        )
    s = results.single_source
    if s is not None:
        verdicts["single-source"] = (
            "Among the three Kaggle classes only (one source, one age group) accuracy is "
            f"{s['kaggle_3class_accuracy']:.3f} (chance {s['kaggle_3class_chance']:.3f}); "
            f"COVID-19 vs the rest (two sources) {s['covid_vs_rest_accuracy']:.3f}. "
            "The easy part of the task is the part that is also a change of source."
        )
    if results.gradcam is not None:
        verdicts["gradcam"] = (
            f"{results.gradcam['mean_inside']:.0%} of the Grad-CAM mass lies inside the lung field, which covers "
            f"{results.lung_fraction_of_film:.0%} of the film. Saliency inside the lungs does not prove the absence "
            "of shortcuts (Viviano et al., ICLR 2021)."
        )
    return verdicts


def _result_table(results: AuditResults) -> pd.DataFrame:
    rows = []
    order = ["intact", *([k for k in ("intact-retrained-folds",) if k in results.tests]), *TESTS]
    names = {
        "intact": "CoroNet, intact films",
        "intact-retrained-folds": "CoroNet, intact, retrained folds only",
        **TESTS,
    }
    for key in order:
        if key not in results.tests:
            continue
        test = results.tests[key]
        row: dict = {"test": names[key], "images": test.images}
        for stat in ("accuracy", "covid_recall", *[f"recall_{c}" for c in _recall_classes(test)]):
            if stat in test.figures:
                v = test.figures[stat]
                row[stat.replace("_", " ")] = f"{v.value:.3f} ({v.low:.2f}-{v.high:.2f})"
        rows.append(row)
    rows.append({"test": "chance (the largest class)", "accuracy": f"{results.chance:.3f}"})
    return pd.DataFrame(rows).set_index("test").astype(object).fillna("")


def _recall_classes(test: AuditTestResult) -> list[str]:
    """The classes whose recall a test's row shows: every class but COVID-19 (shown first, as COVID-19 recall),
    in its task's order (:mod:`coronet.tasks`), else alphabetical."""
    labels = [key.removeprefix("recall_") for key in test.figures if key.startswith("recall_")]
    task = task_of(labels)
    return [c for c in (task.classes if task else sorted(labels)) if c != COVID and c in labels]


LEAD = (
    "Is it looking at the lungs? Each fold's model is tested only on its own validation films. "
    "Test 6 (retraining without the lungs) is the decisive one; tests 1 and 2 measure robustness to "
    "occlusion as much as shortcut use."
)


def _audit_page(results: AuditResults, cam_figure: Path | None) -> Page:
    sections = [
        Section(
            "Is it looking at the lungs?",
            [
                Text(LEAD),
                Table(_result_table(results)),
                Text("Accuracy and recalls with 95% intervals (bootstrap over patients)."),
            ],
        ),
        Section("Verdicts", [Bullets(tuple(results.verdicts.values()))]),
    ]
    if cam_figure is not None:
        sections.append(
            Section("Where the networks looked (Grad-CAM, examples)", [Figure(cam_figure, "Grad-CAM examples", True)])
        )
    return Page("Shortcut audit", sections)


def overview_blocks(results: AuditResults, audit_page: str) -> list[Block]:
    """The overview report's "Is it looking at the lungs?" section: the result table, the verdicts and a link
    to the full audit page (``audit_page``, relative to the overview)."""
    return [
        Table(_result_table(results)),
        Bullets(tuple(results.verdicts.values())),
        Link("the full audit", audit_page),
    ]


__all__ = [
    "AuditConfig",
    "DEFAULT_LUNG_BOX",
    "acquisition_features",
    "acquisition_predictions",
    "audit",
    "audit_external",
    "box_mask",
    "lung_masks",
    "occlude",
    "overview_blocks",
    "parse_box",
]
