"""Predict with a saved model: files and folders in, one row per image out.

Preprocessing is the training pipeline's, by construction: the one reader
(:func:`coronet.data.imageio.read_image`), the one resize
(:func:`coronet.data.imageio.resize_square` to the card's ``input_size``), pixels
divided by 255 into a float32 ``(N, 1, S, S)`` batch. The network normalises
its input itself, so nothing else happens here, whatever the runtime.

A :class:`Predictor` loads a model directory once and is then shared between
threads (the web service does). The model side is safe for that: PyTorch runs
under ``torch.inference_mode`` without touching any shared state, ONNX Runtime
sessions are thread-safe, and Grad-CAM works on its own copy of the network
behind a lock (:class:`coronet.deploy.explain.GradCam`). Decoding is too:
:func:`coronet.data.imageio.read_image` sets the process-global warning filters
once for all the threads decoding at a time (Pillow's decompression-bomb
warning an error, each decoder warning collected for the thread that raised
it) and restores them when the last one finishes; code elsewhere that changes
the filters meanwhile (``warnings.catch_warnings()`` in another thread) can
still disturb that, which is harmless for the results: the reader checks the
pixel count from the header itself before decoding, so the size limit holds
whatever the filter state.

Bad files never stop a run: :meth:`Predictor.predict_files` yields a
:class:`Failure` (``"PATH: problem"``) in the file's place and goes on. Decoder
warnings are never printed as Python warnings: a file that fails has them at
the end of its problem, a file that is predicted carries them in
:attr:`Prediction.warnings`.
"""

from __future__ import annotations

import csv
import json
import os
import stat
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.imageio import ImageReadError, read_image, sniff_format
from ..data.sources.base import IMAGE_SUFFIXES as SOURCE_IMAGE_SUFFIXES
from ..layout import prob_column
from ..models.modeldir import ModelLoadError, card_tta, read_card
from .runtimes.record import choose_runtime
from .runtimes.runners import RUNTIMES, Runner, bf16_network, load_for_inference, load_runner, model_input

__all__ = [
    "training_facts",
    "Failure",
    "IMAGE_SUFFIXES",
    "Prediction",
    "Predictor",
    "RUNTIMES",
    "bf16_network",
    "find_images",
    "format_table",
    "model_input",
    "write_results",
]

#: ``runtime="auto"``: the choice recorded beside the model (``runtimes.json``), else ``torch``.
AUTO = "auto"

#: Suffixes a folder walk picks up without looking inside (content still decides how a file is read): the
#: data sources' image suffixes plus the other formats the reader decodes.
IMAGE_SUFFIXES = SOURCE_IMAGE_SUFFIXES | {".gif", ".webp"}


@dataclass(frozen=True)
class Prediction:
    """One image's class probabilities (and, when asked for, its film and Grad-CAM heat map)."""

    path: str
    classes: tuple[str, ...]
    probabilities: tuple[float, ...]
    image: np.ndarray | None = field(default=None, repr=False)  # decoded film, kept for the CAM overlay
    heatmap: np.ndarray | None = field(default=None, repr=False)  # (S, S) Grad-CAM for the predicted class
    warnings: tuple[str, ...] = ()  # what the decoder warned about while reading the file (it was read)

    @property
    def index(self) -> int:
        """Index of the predicted class (the most probable)."""
        return int(np.argmax(self.probabilities))

    @property
    def predicted(self) -> str:
        return self.classes[self.index]

    def row(self) -> dict:
        """``path, pred, prob_<class>...``: the column names of a run's ``predictions.csv``."""
        return {
            "path": self.path,
            "pred": self.predicted,
            **{prob_column(c): p for c, p in zip(self.classes, self.probabilities)},
        }


@dataclass(frozen=True)
class Failure:
    """A file that could not be predicted, and why."""

    path: str
    problem: str

    def __str__(self) -> str:
        return " ".join(f"{self.path}: {self.problem}".split())


def find_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into the files to predict: files in the order given, each folder's sorted.

    A path named directly is always kept, whatever it is (a missing file, a FIFO, a device, a
    symlink loop then fails with its own one-line message), except a folder, which is walked
    recursively, skipping hidden entries. A folder contributes the entries that have an image
    suffix (:data:`IMAGE_SUFFIXES`), whatever their type, and the regular files whose first bytes
    are an image's, so a folder's CSV or README is passed over while a broken ``.jpg`` is tried
    and reported. A file reached twice is kept once.
    """
    found: list[Path] = []
    seen: set[str] = set()
    for path in map(Path, paths):
        candidates = _walk(path) if _is_folder(path) else [path]
        for candidate in candidates:
            key = os.path.realpath(candidate)  # never raises, even on a symlink loop
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    return found


def _is_folder(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False


def _walk(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if name.startswith("."):
                continue
            if path.suffix.lower() in IMAGE_SUFFIXES or (_is_regular(path) and _looks_like_image(path)):
                files.append(path)
    return files


def _is_regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _looks_like_image(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return sniff_format(handle.read(132)) is not None
    except OSError:
        return True  # unreadable: keep it, so the problem is reported rather than hidden


#: Above this share of some negative source's films called COVID-19, ``serve`` warns and the page shows a notice.
SOURCE_WARNING_RATE = 0.20


def training_facts(card: dict) -> dict:
    """What a user should know before trusting an answer: the training data, how often the model called adult
    films without COVID-19 "COVID-19", and the worst false COVID-19 rate over the negative sources it was
    tested on (``None`` where never measured), with a warning when that is missing or above
    :data:`SOURCE_WARNING_RATE`."""
    training = card.get("training") or {}
    extra = training.get("extra_cohorts") or {"adult": training.get("adult_negatives") or 0}
    added = [
        f"{extra[name]} {what}"
        for name, what in (
            ("adult", "adult ChestX-ray8 films (adult negatives)"),
            ("source", "non-COVID films of the positives' own collections (source negatives)"),
        )
        if extra.get(name)
    ]
    data = "the paper's Table I data" + (
        " plus " + " and ".join(added)
        if added
        else ": every normal and pneumonia film a child's, every COVID-19 film an adult's"
    )
    test = card.get("adult_test") or {}
    worst = (card.get("false_covid_by_source") or {}).get("worst") or {}
    rate = worst.get("rate")
    if rate is None:
        warning = (
            "this model's false COVID-19 rate per source was never measured: it may call films COVID-19 for the "
            "collection they come from, not for the disease"
        )
    elif rate > SOURCE_WARNING_RATE:
        warning = (
            f"this model called {rate:.0%} of the films without COVID-19 from {worst.get('source')} COVID-19 "
            f"(above {SOURCE_WARNING_RATE:.0%}): it reads the source of a film, not only the disease"
        )
    else:
        warning = None
    return {
        "training_data": data,
        "adult_false_covid_rate": test.get("false_covid_rate"),
        "adult_test_films": test.get("films"),
        "worst_false_covid_rate": rate,
        "worst_false_covid_source": worst.get("source"),
        "source_warning": warning,
    }


class Predictor:
    """A model directory loaded once; probabilities (and Grad-CAM) for decoded images or files.

    ``runtime`` is one of :data:`RUNTIMES`: ``"torch"`` (float32, the reference), ``"torch-bf16"``
    (:func:`bf16_network`), ``"onnx"`` (ONNX Runtime on the CPU, on the export at ``onnx_path``,
    default ``MODEL_DIR/model.onnx``; see :mod:`coronet.deploy.export`) or ``"onnx-int8"`` (the static
    int8 model, default ``MODEL_DIR/model.int8.onnx``; see :mod:`coronet.deploy.runtimes`), or
    ``"auto"``: the fastest runtime that passed its accuracy check, as ``MODEL_DIR/runtimes.json``
    records it for this machine and these weights (:func:`coronet.deploy.runtimes.choose_runtime`);
    without a valid record, ``torch``. A recorded runtime that cannot be loaded (its file gone or
    changed, ONNX Runtime not installed) gives way to the next in the record's ranking, then ``torch``.
    :attr:`runtime_choice` says what was asked for and why this runtime runs. Grad-CAM always uses
    the float32 PyTorch network, since it needs gradients.
    """

    def __init__(
        self, model_dir: str | os.PathLike, *, runtime: str = "torch", onnx_path: str | os.PathLike | None = None
    ):
        if runtime != AUTO and runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join((AUTO, *RUNTIMES))}")
        self.model, self.card, self.network = load_for_inference(model_dir)  # network: with the card's TTA
        self.model_dir = read_card(model_dir)[1]
        self.classes = tuple(self.card["classes"])
        self.input_size = int(self.card["input_size"])
        self._grad_cam = None
        self._grad_cam_lock = threading.Lock()
        if runtime == AUTO:
            self.runtime_choice = self._load_choice()
        else:
            self._use(load_runner(runtime, self.model_dir, self.model, self.card, self.network, onnx_path))
            self.runtime_choice = {"requested": runtime, "record": None, "reason": "as requested"}

    def _use(self, runner: Runner) -> None:
        self._runner = runner
        self.runtime = runner.runtime

    def _load_choice(self) -> dict:
        """Load the runtime ``runtimes.json`` chose (or the next that loads); say which and why."""
        choice = choose_runtime(self.model_dir, self.card)
        reason, skipped = choice.reason, []
        for runtime in choice.ranking:
            try:
                self._use(load_runner(runtime, self.model_dir, self.model, self.card, self.network))
            except (ModelLoadError, ImportError, OSError) as error:
                skipped.append(f"{runtime} could not be loaded ({' '.join(str(error).split())})")
                continue
            if skipped:
                reason = f"{reason}; {'; '.join(skipped)}"
            return {"requested": AUTO, "record": choice.record, "reason": reason}
        raise AssertionError("the ranking always ends with torch")  # pragma: no cover

    @property
    def info(self) -> dict:
        """What a result should say about the model that produced it."""
        return {
            "name": self.card.get("name"),
            "version": self.card.get("version"),
            "backbone": self.card.get("backbone"),
            "classes": list(self.classes),
            "input_size": self.input_size,
            "weights_sha256": self.card.get("weights_sha256"),
            "tta": card_tta(self.card),
            "runtime": self.runtime,
            "runtime_choice": self.runtime_choice,
            **training_facts(self.card),
        }

    # ------------------------------------------------------------------ arrays

    def batch(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The model input for decoded 2-D uint8 films of any size: ``(N, 1, S, S)`` float32 in [0, 1]."""
        return model_input(images, self.input_size)

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities ``(N, len(classes))`` float32 for decoded 2-D uint8 films."""
        if not len(images):
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        return self.run(self.batch(images))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a ready model input ``(N, 1, S, S)`` float32 in [0, 1]."""
        return self._runner.run(batch)

    def heatmaps(self, images: Sequence[np.ndarray], classes: Sequence[int]) -> np.ndarray:
        """Grad-CAM heat maps ``(N, S, S)`` in [0, 1] for decoded films, film ``i`` explaining class ``classes[i]``."""
        return self.grad_cam(self.batch(images), classes)

    @property
    def grad_cam(self):
        """The :class:`coronet.deploy.explain.GradCam` of this model, built on first use."""
        with self._grad_cam_lock:
            if self._grad_cam is None:
                from .explain import GradCam

                self._grad_cam = GradCam(self.model, self.input_size)
            return self._grad_cam

    # ------------------------------------------------------------------- files

    def predict_files(
        self,
        paths: Iterable[str | os.PathLike],
        *,
        batch_size: int = 16,
        cam: bool = False,
        max_pixels: int | None = None,
    ) -> Iterator[Prediction | Failure]:
        """One :class:`Prediction` or :class:`Failure` per path, in order, ``batch_size`` films per forward pass.

        ``max_pixels`` lowers the reader's pixel limit (``coronet predict`` passes its ``--max-pixels``, by
        default :data:`coronet.data.imageio.DEFAULT_MAX_PIXELS`, as ``coronet serve`` does); None: Pillow's
        ``MAX_IMAGE_PIXELS`` alone.

        With ``cam``, each prediction also carries its decoded film and the Grad-CAM heat map
        of its predicted class: full-size arrays, so a caller that keeps many results should
        keep ``dataclasses.replace(result, image=None, heatmap=None)`` once it has used them.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        pending: list[tuple[str, np.ndarray | str, tuple[str, ...]]] = []  # (path, film or problem, warnings)
        loaded = 0
        for path in paths:
            label = os.fspath(path)
            warned: list[str] = []
            try:
                pending.append(
                    (label, read_image(path, name=label, max_pixels=max_pixels, warned=warned), tuple(warned))
                )
                loaded += 1
            except ImageReadError as error:
                pending.append((label, error.problem, ()))
            if loaded == batch_size:
                yield from self._flush(pending, cam)
                pending, loaded = [], 0
        yield from self._flush(pending, cam)

    def _flush(self, pending, cam: bool) -> Iterator[Prediction | Failure]:
        films = [item for _, item, _ in pending if isinstance(item, np.ndarray)]
        probabilities = self.probabilities(films)
        maps = None
        if cam and films:
            maps = self.heatmaps(films, [int(i) for i in probabilities.argmax(axis=1)])
        k = 0
        for label, item, warned in pending:
            if not isinstance(item, np.ndarray):
                yield Failure(label, item)
                continue
            yield Prediction(
                label,
                self.classes,
                tuple(float(p) for p in probabilities[k]),
                image=item if cam else None,
                heatmap=maps[k] if maps is not None else None,
                warnings=warned,
            )
            k += 1


# ---------------------------------------------------------------------- output


def format_table(predictions: Sequence[Prediction], classes: Sequence[str], *, width: int | None = None) -> str:
    """A plain-text table: file, predicted class, one probability column per class."""
    lines = [table_header(classes, width=width)]
    lines += [table_line(p, width=width or _file_width(predictions)) for p in predictions]
    return "\n".join(lines)


def table_header(classes: Sequence[str], *, width: int | None = None) -> str:
    """The table's header line (see :func:`format_table`)."""
    cells = [f"{c:>10}" for c in classes]
    return f"{'file':<{width or 4}}  {'predicted':<10}  " + "  ".join(cells)


def table_line(prediction: Prediction, *, width: int | None = None) -> str:
    """One row of the table; ``width`` pads the file column."""
    cells = [f"{p:>10.4f}" for p in prediction.probabilities]
    return f"{prediction.path:<{width or 4}}  {prediction.predicted:<10}  " + "  ".join(cells)


def _file_width(predictions: Sequence[Prediction]) -> int:
    return max([4] + [len(p.path) for p in predictions])


def write_results(
    path: str | os.PathLike, predictions: Sequence[Prediction], failures: Sequence[Failure], info: dict
) -> Path:
    """Write predictions as CSV (``.csv``: ``path, pred, prob_<class>...``) or JSON (``.json``); return the path.

    The JSON form also records the model (``info``) and the files that failed; the CSV holds
    one row per predicted image only (failures are reported on the terminal).
    """
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in (".csv", ".json"):
        raise ValueError(f"{path}: output must end in .csv or .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == ".csv":
        columns = ["path", "pred"] + [prob_column(c) for c in info["classes"]]
        with open(path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(p.row() for p in predictions)
    else:
        document = {
            "model": info,
            "predictions": [
                {"path": p.path, "pred": p.predicted, "probabilities": dict(zip(p.classes, p.probabilities))}
                for p in predictions
            ],
            "failures": [{"path": f.path, "problem": f.problem} for f in failures],
        }
        path.write_text(json.dumps(document, indent=2) + "\n")
    return path
