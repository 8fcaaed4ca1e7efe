"""Using a trained model: ``predict``, ``export``, ``serve``."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer
from PIL import Image

from ..data.imageio import DEFAULT_MAX_PIXELS
from ._app import ModelOption, Runtime, RuntimeOption, app, fail, value

#: Lists at least this long get a progress bar (on a terminal).
PROGRESS_FROM = 50
#: Images per predicted class in the --cam grid (the paper's Fig. 8 shows a few per class).
GRID_PER_CLASS = 4
#: predict's and serve's --max-pixels: one limit, one text, so that a film one accepts the other does too.
MAX_PIXELS_HELP = (
    "Largest accepted image, in pixels (width x height), checked from the header before decoding; the same default "
    f"for coronet predict and coronet serve ({DEFAULT_MAX_PIXELS}), never above Pillow's limit "
    f"({Image.MAX_IMAGE_PIXELS})."
)


@app.command("predict")
def predict(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders (searched recursively).")],
    model: ModelOption,
    out: Annotated[Optional[Path], typer.Option(help="Also write the results to FILE.csv or FILE.json.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 16,
    runtime: RuntimeOption = Runtime.auto,
    cam: Annotated[
        Optional[Path], typer.Option(help="Write a Grad-CAM overlay PNG per image (and grid.png) here.")
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar for long lists.")] = True,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Also report what the decoder warned about in files that were read (one line each)."
        ),
    ] = False,
    max_pixels: Annotated[int, typer.Option(min=1, help=MAX_PIXELS_HELP)] = DEFAULT_MAX_PIXELS,
):
    """Classify chest X-rays: a table of file, predicted class and class probabilities.

    Unreadable files are reported one line each (file: problem, with any decoder warning at its end), the others
    still predicted; exit status 1.
    """
    from ..deploy.predict import Failure, Predictor, find_images
    from ..models.modeldir import ModelLoadError

    if out is not None:
        _check_output_file(out)
    try:
        predictor = Predictor(model, runtime=value(runtime))
    except (ModelLoadError, ValueError) as error:
        fail(str(error))
    _say_runtime(predictor)
    files = find_images(paths)
    if not files:
        fail(f"no image files found in {', '.join(map(str, paths))}", 1)
    # a folder named on the command line that holds no image still gets its line (and counts as failed)
    empty = [Failure(str(p), "folder holds no image files") for p in paths if p.is_dir() and not find_images([p])]
    overlays = _CamWriter.into(cam) if cam is not None else None
    predictions, failures = _print_predictions(
        predictor, files, empty, batch_size, overlays, progress, verbose, max_pixels
    )
    if out is not None:
        _write_results(out, predictions, failures, predictor.info)
    if overlays is not None and predictions:
        grid = overlays.grid(predictor.classes)
        typer.echo(
            f"Grad-CAM (target layer {predictor.grad_cam.target_layer}): {len(predictions)} overlays "
            f"and {grid} in {cam}",
            err=True,
        )
    typer.echo(
        f"{len(predictions)} predicted, {len(failures)} failed" + (f"; results in {out}" if out is not None else ""),
        err=True,
    )
    if failures:
        raise typer.Exit(1)


def _print_predictions(
    predictor, files, empty, batch_size: int, overlays, progress: bool, verbose: bool, max_pixels: int
):
    """Predict ``files``; print a table line per film (stdout) and a line per failure (stderr) as they come,
    under a progress bar on a terminal. Returns (predictions without their arrays, failures)."""
    from tqdm import tqdm

    from ..deploy.predict import Failure, table_header, table_line

    width = max(len(str(f)) for f in files)
    typer.echo(table_header(predictor.classes, width=width))
    predictions, failures = [], list(empty)
    for failure in empty:
        typer.echo(str(failure), err=True)
    show_bar = progress and len(files) >= PROGRESS_FROM and sys.stderr.isatty()  # no bar redraws in logs
    bar = tqdm(total=len(files), unit="image", disable=not show_bar, file=sys.stderr)
    for result in predictor.predict_files(
        files, batch_size=batch_size, cam=overlays is not None, max_pixels=max_pixels
    ):
        if isinstance(result, Failure):
            failures.append(result)
            bar.write(str(result), file=sys.stderr)
        else:
            bar.write(table_line(result, width=width), file=sys.stdout)
            if verbose and result.warnings:
                warned = "a decoder warning" if len(result.warnings) == 1 else "decoder warnings"
                note = Failure(result.path, f"predicted despite {warned}: {'; '.join(result.warnings)}")
                bar.write(str(note), file=sys.stderr)  # one line, as a failure's
            if overlays is not None:
                overlays.add(result)
            # The film and heat map are full-size arrays: a long list must not keep them all in memory.
            predictions.append(replace(result, image=None, heatmap=None))
        bar.update()
    bar.close()
    return predictions, failures


def _write_results(out: Path, predictions, failures, info: dict) -> None:
    """``--out``: the results as CSV or JSON (one line and exit status 2 when it cannot be written)."""
    from ..deploy.predict import write_results

    try:
        write_results(out, predictions, failures, info)
    except OSError as error:
        fail(f"{out}: cannot write the results ({error.strerror or error})")


def _say_runtime(predictor) -> None:
    """One stderr line when a ``runtimes.json`` decided the runtime (or was there and ignored); none otherwise."""
    choice = predictor.runtime_choice
    directory = predictor.model_dir
    if choice["requested"] == "auto" and (choice["record"] or (directory / "runtimes.json").exists()):
        typer.echo(f"runtime: {predictor.runtime} ({choice['reason']})", err=True)


def _check_output_file(out: Path) -> None:
    """Fail now, before any prediction, when ``--out`` could not be written at the end."""
    if out.suffix.lower() not in (".csv", ".json"):
        fail(f"{out}: --out must end in .csv or .json")
    if out.is_dir():
        fail(f"{out}: --out is a directory; give a file name")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"{out}: cannot create its folder ({error.strerror or error})")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        fail(f"{out}: not writable")


class _CamWriter:
    """Writes each prediction's Grad-CAM overlay as a PNG and keeps a few for the grid."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.names: set[str] = set()
        self.kept: dict[str, list] = {}

    @classmethod
    def into(cls, folder: Path) -> _CamWriter:
        """A writer into ``folder``, created now (one line and exit status 2 when it cannot be)."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            fail(f"{folder}: cannot create the --cam folder ({error.strerror or error})")
        return cls(folder)

    def add(self, prediction) -> Path:
        from ..deploy.explain import fit, overlay, png_bytes

        picture = overlay(prediction.image, prediction.heatmap)
        path = self.folder / self._unique(Path(prediction.path).stem)
        path.write_bytes(png_bytes(picture))
        chosen = self.kept.setdefault(prediction.predicted, [])
        if len(chosen) < GRID_PER_CLASS:  # small copies only: a long list must not fill the memory
            chosen.append(
                (
                    replace(prediction, image=None, heatmap=None),
                    overlay(fit(prediction.image, 224), prediction.heatmap, max_side=224),
                )
            )
        return path

    def _unique(self, stem: str) -> str:
        name, n = f"{stem}-cam.png", 1
        while name in self.names or name == "grid.png":
            n += 1
            name = f"{stem}-{n}-cam.png"
        self.names.add(name)
        return name

    def grid(self, classes) -> str:
        """Write ``grid.png``: up to GRID_PER_CLASS overlays per predicted class; return its name."""
        import numpy as np

        from ..evaluation.figures import plot_prediction_grid

        picked = [item for c in classes for item in self.kept.get(c, [])]
        plot_prediction_grid(
            [picture for _, picture in picked],
            list(classes),
            np.array([p.probabilities for p, _ in picked]),
            self.folder / "grid.png",
            names=[p.path for p, _ in picked],
            columns=GRID_PER_CLASS,
        )
        return "grid.png"


@app.command("export")
def export(
    onnx: Annotated[Path, typer.Option("--onnx", help="Model directory to export to ONNX.")],
    out: Annotated[Optional[Path], typer.Option(help="ONNX file to write (default: MODEL_DIR/model.onnx).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset version.")] = 18,
):
    """Export a model directory to ONNX (dynamic batch) and check it against PyTorch."""
    import numpy as np

    from ..deploy.export import export_onnx, onnx_parity, open_session, record_path
    from ..models.modeldir import ModelLoadError, load_model_dir

    try:
        network, card = load_model_dir(onnx)  # loaded once: exported, then compared with the export
        path = export_onnx(onnx, out, opset=opset, model=network)
        session = open_session(onnx, path)
    except ModelLoadError as error:
        fail(str(error))
    except OSError as error:
        fail(f"{out or onnx}: cannot write the export ({error.strerror or error})")
    # Random films at batch sizes 1 and 3: the dynamic batch dimension works and the numbers agree.
    rng = np.random.default_rng(0)
    size = int(card["input_size"])
    worst = max(
        onnx_parity(onnx, rng.random((n, 1, size, size), dtype=np.float32), path, model=network, session=session)
        for n in (1, 3)
    )
    typer.echo(
        f"wrote {path} (+ {record_path(path).name}); "
        f"max |p_onnx - p_torch| = {worst:.2e} on random inputs (batch 1 and 3)"
    )
    if worst > 1e-4:
        fail(f"{path}: ONNX Runtime differs from PyTorch by {worst:.2e} (> 1e-4)", 1)


@app.command("runtimes", logs_to_stderr=True)
def runtimes(
    model: ModelOption,
    dataset: Annotated[
        Optional[Path],
        typer.Option(
            help="Prepared dataset (coronet data prepare) for the accuracy check and the int8 calibration. Without "
            "it only the float32 runtimes (torch, onnx) are measured as eligible."
        ),
    ] = None,
    fold: Annotated[
        Optional[int],
        typer.Option(
            help="Check on this fold's validation films, calibrate int8 on its training films "
            "(default with --dataset: the fold the model card says the model was validated on)."
        ),
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Timed runs per figure (latency: median; batch 32: best).")] = 10,
    calibration_films: Annotated[int, typer.Option(min=1, help="Training films the int8 calibration sees.")] = 100,
):
    """Measure each runtime on this machine, check the low-precision ones, record the fastest in runtimes.json.

    Runtimes: torch (float32, the reference), torch-bf16 (on a CPU with native bf16), onnx (ONNX Runtime; the
    export is made when missing), onnx-int8 (static int8, calibrated on the fold's training films). Each
    low-precision runtime must keep the 4-class accuracy on the fold's validation films within 0.5 points of
    torch, and change at most 1 % of the answers. `coronet predict` and `coronet serve` then run the fastest that
    passed (--runtime auto).
    """
    from ..deploy.runtimes import RECORD_NAME, format_record, measure_runtimes
    from ..models.modeldir import ModelLoadError, read_card

    try:
        card, directory = read_card(model)
    except ModelLoadError as error:
        fail(str(error))
    if dataset is None and fold is not None:
        fail("--fold needs --dataset (the films of the check)")
    if dataset is not None:
        fold = _check_fold(card, directory, fold)
    try:
        record = measure_runtimes(
            directory,
            dataset,
            fold,
            repeats=repeats,
            calibration_films=calibration_films,
        )
    except (ModelLoadError, ValueError, FileNotFoundError) as error:
        fail(" ".join(str(error).split()))
    except OSError as error:
        fail(f"{directory}: cannot write ({error.strerror or error})")
    typer.echo(format_record(record))
    typer.echo(f"wrote {directory / RECORD_NAME}")


def _check_fold(card: dict, directory: Path, fold: Optional[int]) -> int:
    """The fold of the check: ``--fold``, else the one the model card says the model was validated on; a note on
    stderr when it is another fold (its validation films were among the model's training films)."""
    trained_fold = card.get("training", {}).get("fold") if isinstance(card.get("training"), dict) else None
    if fold is None:
        if not isinstance(trained_fold, int):
            fail(f"{directory}: the model card names no validation fold; give --fold")
        typer.echo(f"fold {trained_fold}: the model's validation fold (model card)", err=True)
        return trained_fold
    if isinstance(trained_fold, int) and fold != trained_fold:
        typer.echo(
            f"note: the model was validated on fold {trained_fold}; fold {fold}'s validation films were among its "
            "training films (the check still compares the runtimes with each other)",
            err=True,
        )
    return fold


@app.command("serve")
def serve(
    model: ModelOption,
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    runtime: RuntimeOption = Runtime.auto,
    max_upload_mb: Annotated[float, typer.Option(min=1, help="Largest accepted upload, in MiB (at least 1).")] = 32,
    max_pixels: Annotated[int, typer.Option(min=1, help=MAX_PIXELS_HELP)] = DEFAULT_MAX_PIXELS,
    model_threads: Annotated[
        Optional[int], typer.Option(min=1, help="Concurrent model computations (default: CPUs, 2 to 8).")
    ] = None,
    max_concurrency: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Predictions in progress at most, each from its decoded film to its answer (an upload still "
            "arriving holds none); beyond it new ones get a JSON 503 at once (default: 4 x model threads + 8). "
            "/v1/health and the page are not counted.",
        ),
    ] = None,
    max_uploads: Annotated[
        int,
        typer.Option(
            min=1,
            help="Uploads being received (and decoded) at most; beyond it new ones get a JSON 503 at once.",
        ),
    ] = 64,
    upload_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds an upload may send nothing before it is refused (408); also the time a connection has to "
            "send a request's headers, from opening or from its previous answer (else 408 and closed).",
        ),
    ] = 30.0,
):
    """Serve the model: JSON API (/v1/predict, /v1/health, /v1/model, /docs) and a web page at /.

    Stops on SIGTERM or Ctrl-C: uploads still arriving get a JSON 503, the predictions in progress are finished (up
    to 5 s), then exit status 0.
    """
    from ..deploy.serve import serve as run_server
    from ..models.modeldir import ModelLoadError

    try:
        run_server(
            model,
            host=host,
            port=port,
            runtime=value(runtime),
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            max_pixels=max_pixels,
            model_threads=model_threads,
            max_concurrency=max_concurrency,
            max_uploads=max_uploads,
            upload_timeout=upload_timeout,
        )
    except (ModelLoadError, ValueError) as error:
        fail(str(error))
