"""Prediction: the training preprocessing, file/folder expansion, bad files, batching, outputs, the CLI."""

from __future__ import annotations

import csv
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from coronet.cli import app
from coronet.data.imageio import read_image, resize_square
from coronet.deploy.predict import Failure, Prediction, Predictor, find_images, format_table, write_results
from coronet.models.modeldir import load_model_dir
from deploy_helpers import bad_files


@pytest.fixture(scope="module")
def predictor(tiny_model_dir) -> Predictor:
    return Predictor(tiny_model_dir)


@pytest.fixture
def film_folder(tmp_path, xray_paths):
    """Real films in a folder tree, with a CSV, a README, a hidden file and the bad-file corpus mixed in."""
    root = tmp_path / "films"
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    for i, path in enumerate(xray_paths):  # two films at each level
        shutil.copy(path, root / ["", "sub", "sub/deeper"][i // 2] / path.name)
    shutil.copy(xray_paths[0], root / ".hidden" / "skipped.jpg")
    shutil.copy(xray_paths[1], root / "no-suffix")  # content, not the name, makes it an image
    (root / "labels.csv").write_text("path,label\n")
    (root / "README").write_text("films for the test\n")
    for name, content in bad_files().values():
        (root / "sub" / name).write_bytes(content)
    return root


def test_preprocessing_is_the_training_pipeline(predictor, tiny_model_dir, xray_paths):
    films = [read_image(p) for p in xray_paths]
    batch = predictor.batch(films)
    expected = np.stack([resize_square(f, 64) for f in films])[:, None].astype(np.float32) / 255
    assert batch.shape == (len(films), 1, 64, 64) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, expected)
    model, _ = load_model_dir(tiny_model_dir)
    with torch.no_grad():
        reference = torch.softmax(model(torch.from_numpy(expected)), 1).numpy()
    np.testing.assert_allclose(predictor.probabilities(films), reference, atol=1e-6)
    # The sharpened test model tells films apart, so the comparisons in these tests mean something.
    assert np.ptp(reference, axis=0).max() > 0.02


def test_find_images_walks_folders_and_keeps_named_files(film_folder, tmp_path, xray_paths):
    missing = tmp_path / "missing.png"
    found = find_images([film_folder / "labels.csv", film_folder, missing, film_folder / "sub"])
    names = [p.relative_to(film_folder).as_posix() if p.is_relative_to(film_folder) else p.name for p in found]
    assert names[0] == "labels.csv"  # named directly: tried, whatever it is
    assert names[-1] == "missing.png"  # named directly: reported later as missing
    films = [p.name for p in xray_paths]
    bad = [name for name, _ in bad_files().values()]
    assert (
        names[1:-1]
        == (
            sorted(films[:2] + ["no-suffix"])  # not labels.csv, README, .hidden/
            + [f"sub/{n}" for n in sorted(films[2:4] + bad)]
            + [f"sub/deeper/{n}" for n in sorted(films[4:])]
        )
    )  # "sub" named again: not repeated


def test_bad_files_fail_one_line_each_and_the_rest_are_predicted(predictor, film_folder):
    files = find_images([film_folder])
    results = list(predictor.predict_files(files, batch_size=3))
    assert [r.path for r in results] == [str(f) for f in files]  # one result per file, in order
    failures = {r.path.rsplit("/", 1)[-1]: r for r in results if isinstance(r, Failure)}
    assert set(failures) == {name for name, _ in bad_files().values()}
    for failure in failures.values():
        line = str(failure)
        assert "\n" not in line and line.startswith(failure.path + ": ") and failure.problem
    assert "0 bytes" in failures["empty.png"].problem and "truncated" in failures["cut.jpg"].problem
    assert "decompression bomb" in failures["bomb.png"].problem
    assert "no pixel data" in failures["meta.dcm"].problem and "not an image" in failures["notes.png"].problem
    assert "not an image" in failures["noise.dcm"].problem and "CRC mismatch" in failures["damaged.png"].problem
    predictions = [r for r in results if isinstance(r, Prediction)]
    assert len(predictions) == 7 and all(abs(sum(p.probabilities) - 1) < 1e-5 for p in predictions)


def test_paths_that_are_not_plain_files_each_get_a_verdict(predictor, xray_paths, tmp_path):
    """A symlink loop, a directory named like a film, /dev/zero and a FIFO: one line each, never a hang."""
    import os

    (tmp_path / "loop-a.png").symlink_to(tmp_path / "loop-b.png")
    (tmp_path / "loop-b.png").symlink_to(tmp_path / "loop-a.png")
    (tmp_path / "x.jpg").mkdir()
    os.mkfifo(tmp_path / "pipe.png")
    inside = tmp_path / "folder"
    inside.mkdir()
    os.mkfifo(inside / "pipe2.png")
    (inside / "loop.jpg").symlink_to(inside / "loop.jpg")
    named = [tmp_path / "loop-a.png", tmp_path / "x.jpg", "/dev/zero", tmp_path / "pipe.png", inside, xray_paths[0]]
    files = find_images(named)
    results = list(predictor.predict_files(files))
    failures = {Path(r.path).name: r.problem for r in results if isinstance(r, Failure)}
    assert "symbolic links" in failures["loop-a.png"] or "loop" in failures["loop-a.png"]
    assert "x.jpg" not in failures  # a folder (named like a film) is walked; the command line reports it empty
    assert "character device" in failures["zero"]
    assert "FIFO" in failures["pipe.png"] and "FIFO" in failures["pipe2.png"]  # found inside a folder too
    assert "loop.jpg" in failures
    assert [Path(r.path).name for r in results if isinstance(r, Prediction)] == [xray_paths[0].name]


def test_cli_reports_a_named_folder_without_films(tiny_model_dir, xray_paths, tmp_path):
    (tmp_path / "x.jpg").mkdir()
    result = runner.invoke(
        app, ["predict", str(tmp_path / "x.jpg"), str(xray_paths[0]), "--model", str(tiny_model_dir)]
    )
    assert result.exit_code == 1 and f"{tmp_path / 'x.jpg'}: folder holds no image files" in result.output
    assert "1 predicted, 1 failed" in result.output and "Traceback" not in result.output


def test_batch_size_does_not_change_results(predictor, xray_paths):
    one = [r.probabilities for r in predictor.predict_files(xray_paths, batch_size=1)]
    four = [r.probabilities for r in predictor.predict_files(xray_paths, batch_size=4)]
    np.testing.assert_allclose(one, four, atol=1e-6)


def test_concurrent_use_gives_the_sequential_results(predictor, tiny_model_dir, xray_paths):
    films = [read_image(p) for p in xray_paths]
    expected = predictor.probabilities(films)
    expected_cam = predictor.heatmaps(films[:2], [0, 1])
    shared = Predictor(tiny_model_dir)  # its Grad-CAM is built by the first thread that needs it, mid-traffic
    errors, results = [], {}

    def work(worker: int):
        try:
            for step in range(6):
                i = (worker + step) % len(films)
                results[(worker, step)] = (i, shared.probabilities([films[i]])[0])
                if (step + worker) % 3 == 1:
                    k = worker % 2
                    np.testing.assert_allclose(shared.heatmaps([films[k]], [k])[0], expected_cam[k], atol=1e-5)
        except Exception as error:  # collected: an assertion in a thread would be lost
            errors.append(error)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert len(results) == 36
    for i, probabilities in results.values():
        np.testing.assert_allclose(probabilities, expected[i], atol=1e-5)


def test_write_results_csv_and_json(tmp_path):
    classes = ("covid", "normal")
    predictions = [Prediction("a.png", classes, (0.25, 0.75)), Prediction("b.dcm", classes, (0.9, 0.1))]
    failures = [Failure("c.jpg", "truncated JPEG")]
    info = {"name": "m", "classes": list(classes)}
    with open(write_results(tmp_path / "out.csv", predictions, failures, info), newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {"path": "a.png", "pred": "normal", "prob_covid": "0.25", "prob_normal": "0.75"},
        {"path": "b.dcm", "pred": "covid", "prob_covid": "0.9", "prob_normal": "0.1"},
    ]
    document = json.loads(write_results(tmp_path / "out.json", predictions, failures, info).read_text())
    assert document["model"] == info
    assert document["predictions"][1] == {
        "path": "b.dcm",
        "pred": "covid",
        "probabilities": {"covid": 0.9, "normal": 0.1},
    }
    assert document["failures"] == [{"path": "c.jpg", "problem": "truncated JPEG"}]
    with pytest.raises(ValueError, match=r"\.csv or \.json"):
        write_results(tmp_path / "out.txt", predictions, failures, info)
    table = format_table(predictions, classes).splitlines()
    assert table[0].split() == ["file", "predicted", "covid", "normal"]
    assert table[1].split() == ["a.png", "normal", "0.2500", "0.7500"]


def test_unknown_runtime_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="unknown runtime"):
        Predictor(tiny_model_dir, runtime="tensorrt")


# ------------------------------------------------------------------------------------------ CLI

runner = CliRunner()


def test_cli_predict_folder_table_csv_and_exit_status(tiny_model_dir, film_folder, tmp_path, predictor):
    out = tmp_path / "predictions.csv"
    result = runner.invoke(
        app, ["predict", str(film_folder), "--model", str(tiny_model_dir), "--out", str(out), "--batch-size", "2"]
    )
    assert result.exit_code == 1, result.output  # some files failed ...
    rows = list(csv.DictReader(open(out, newline="")))
    assert len(rows) == 7  # ... and the rest were predicted
    assert list(rows[0]) == ["path", "pred", "prob_covid", "prob_normal", "prob_bacterial", "prob_viral"]
    for row in rows:
        expected = predictor.probabilities([read_image(row["path"])])[0]
        np.testing.assert_allclose([float(row[f"prob_{c}"]) for c in predictor.classes], expected, atol=1e-6)
        assert row["pred"] == predictor.classes[int(np.argmax(expected))]
    lines = result.output.splitlines()
    assert lines[0].split() == ["file", "predicted", "covid", "normal", "bacterial", "viral"]
    table = [line for line in lines if line.split() and line.split()[0] in {r["path"] for r in rows}]
    assert len(table) == 7
    for name, _ in bad_files().values():
        assert sum(line.startswith(str(film_folder / "sub" / name) + ": ") for line in lines) == 1
    assert "7 predicted, 7 failed" in result.output


def test_cli_predict_all_good_exits_zero_and_writes_json(tiny_model_dir, xray_paths, tmp_path):
    out = tmp_path / "p.json"
    result = runner.invoke(
        app, ["predict", *map(str, xray_paths[:2]), "--model", str(tiny_model_dir / "model.json"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert [p["path"] for p in document["predictions"]] == [str(p) for p in xray_paths[:2]]
    assert document["failures"] == [] and document["model"]["runtime"] == "torch"


def test_cli_predict_cam_writes_overlays_and_grid(tiny_model_dir, xray_paths, tmp_path):
    cam = tmp_path / "cam"
    result = runner.invoke(app, ["predict", *map(str, xray_paths), "--model", str(tiny_model_dir), "--cam", str(cam)])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in cam.iterdir())
    assert written == sorted([f"{p.stem}-cam.png" for p in xray_paths] + ["grid.png"])
    for path in xray_paths:
        overlay = Image.open(cam / f"{path.stem}-cam.png")
        film = read_image(path)
        assert overlay.mode == "RGB" and max(overlay.size) == min(512, max(film.shape))
        assert abs(overlay.size[0] / overlay.size[1] - film.shape[1] / film.shape[0]) < 0.02  # the film's aspect
    assert Image.open(cam / "grid.png").size[0] > 500
    assert "target layer backbone.layer4" in result.output


def test_cli_predict_cam_keeps_no_full_size_films(tiny_model_dir, xray_paths, tmp_path, monkeypatch):
    """After its overlay is written, a result is kept without its film and heat map (the grid keeps small copies)."""
    import coronet.deploy.predict
    from coronet.cli import deploy

    written, for_grid = [], []
    real_grid = deploy._CamWriter.grid

    def grid(self, classes):
        for_grid.extend(self.kept.items())
        return real_grid(self, classes)

    monkeypatch.setattr(deploy._CamWriter, "grid", grid)
    monkeypatch.setattr(
        coronet.deploy.predict, "write_results", lambda path, predictions, *_: written.extend(predictions)
    )
    monkeypatch.setattr(deploy, "GRID_PER_CLASS", 1)
    result = runner.invoke(
        app,
        [
            "predict",
            *map(str, xray_paths),
            "--model",
            str(tiny_model_dir),
            "--cam",
            str(tmp_path / "cam"),
            "--out",
            str(tmp_path / "p.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert [p.path for p in written] == list(map(str, xray_paths))
    assert for_grid and all(len(items) == 1 for _, items in for_grid)  # at most GRID_PER_CLASS per class
    kept = written + [p for _, items in for_grid for p, _ in items]
    assert all(p.image is None and p.heatmap is None for p in kept)
    assert all(max(picture.shape[:2]) <= 224 for _, items in for_grid for _, picture in items)


def test_cli_predict_unwritable_out_fails_before_predicting(tiny_model_dir, xray_paths, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("")
    (tmp_path / "folder.csv").mkdir()
    for out, words in (
        (tmp_path / "a-file" / "p.csv", "cannot create its folder"),
        (tmp_path / "folder.csv", "is a directory"),
    ):
        result = runner.invoke(app, ["predict", str(xray_paths[0]), "--model", str(tiny_model_dir), "--out", str(out)])
        assert result.exit_code == 2 and words in result.output, result.output
        assert str(xray_paths[0]) not in result.output  # refused up front: nothing was predicted
    # A write that fails at the end anyway (disk full, ...): one line, no traceback.
    import coronet.deploy.predict

    def disk_full(path, *_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(coronet.deploy.predict, "write_results", disk_full)
    result = runner.invoke(
        app, ["predict", str(xray_paths[0]), "--model", str(tiny_model_dir), "--out", str(tmp_path / "p.json")]
    )
    assert result.exit_code == 2
    assert "cannot write the results (No space left on device)" in result.output
    assert "Traceback" not in result.output


def test_cli_predict_usage_errors(tiny_model_dir, tmp_path, xray_paths):
    result = runner.invoke(app, ["predict", str(xray_paths[0]), "--model", str(tmp_path)])
    assert result.exit_code == 2 and "not a model directory" in result.output
    result = runner.invoke(app, ["predict", str(xray_paths[0]), "--model", str(tiny_model_dir), "--out", "x.txt"])
    assert result.exit_code == 2 and ".csv or .json" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["predict", str(tmp_path / "empty"), "--model", str(tiny_model_dir)])
    assert result.exit_code == 1 and "no image files found" in result.output


def test_cli_predict_decoder_warnings_give_one_line_per_file(tiny_model_dir, tmp_path):
    """Three files whose decoders warn (a DICOM saying RLE over raw pixels, a JPEG with corrupt EXIF, a TIFF with a
    bad IFD), predicted by `coronet predict` in its own process, where Python shows warnings as it would to a user:
    each file gets its one line (the DICOM its error on stderr, the others their row on stdout) and no Python
    warning is printed. With --verbose the films that were read get one line each naming the warning."""
    import subprocess
    import sys

    from deploy_helpers import warning_files

    paths = []
    for name, content in warning_files().items():
        (tmp_path / name).write_bytes(content)
        paths.append(str(tmp_path / name))
    command = [sys.executable, "-c", "from coronet.cli import app; app()", "predict", *paths]
    done = subprocess.run(
        [*command, "--model", str(tiny_model_dir)], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 1, done.stderr
    errors = done.stderr.splitlines()
    assert len(errors) == 2, errors  # the DICOM's one line, and the summary
    assert errors[0].startswith(paths[0] + ": unreadable DICOM") and "transfer syntax" in errors[0]
    assert errors[1] == "2 predicted, 1 failed"
    rows = done.stdout.splitlines()
    assert len(rows) == 3 and [row.split()[0] for row in rows[1:]] == paths[1:]
    assert "Warning" not in done.stderr and "site-packages" not in done.stderr

    verbose = runner.invoke(app, ["predict", *paths, "--model", str(tiny_model_dir), "--verbose"])
    assert verbose.exit_code == 1
    notes = [line for line in verbose.stderr.splitlines() if "predicted despite" in line]
    assert notes == [
        f"{paths[1]}: predicted despite decoder warnings: Tag data larger than file. Skipping tag 271; "
        "Corrupt EXIF data. Expecting to read 12 bytes but only got 4.",
        f"{paths[2]}: predicted despite a decoder warning: Corrupt EXIF data. Expecting to read 12 bytes but only "
        "got 0.",
    ]
    assert len(verbose.stderr.splitlines()) == 4
