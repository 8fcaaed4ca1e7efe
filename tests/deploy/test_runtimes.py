"""The runtime choice (issue 18, CPU inference): each low-precision runtime is checked before use, a broken one is
refused, and the choice recorded beside the model is honoured by predict, serve and /v1/health (unless stale).

Speed is never asserted: the tests replace the timing with fixed figures, so the choice they expect is known.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from coronet.cli import app
from coronet.deploy import runtimes
from coronet.deploy.export import ONNX_NAME, open_session, record_path
from coronet.deploy.predict import RUNTIMES, Predictor
from coronet.deploy.runtimes import (
    INT8_NAME,
    QUANTIZED_OPS,
    RECORD_NAME,
    accuracy_check,
    choice,
    choose_runtime,
    measure_runtimes,
    quantize_int8,
)
from coronet.models.modeldir import file_sha256
from deploy_helpers import CLASSES, make_model_dir

runner = CliRunner()
SIZE = 64
#: Fixed "measured" figures: int8 the fastest, then onnx, bf16, torch (a test that expects a choice knows it).
FAKE_LATENCY_MS = {"onnx-int8": 1.0, "onnx": 2.0, "torch-bf16": 3.0, "torch": 4.0}


def calm_down(patch: pytest.MonkeyPatch) -> None:
    """One ONNX Runtime thread, no spinning (the tests share the CPUs), and fixed speeds: no wall clock here."""
    import onnxruntime as ort

    class OneThread(ort.SessionOptions):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.intra_op_num_threads = self.inter_op_num_threads = 1
            self.add_session_config_entry("session.intra_op.allow_spinning", "0")

    patch.setattr(ort, "SessionOptions", OneThread)
    patch.setattr(choice, "measure_speed", fake_speed)


@pytest.fixture(autouse=True)
def calm(monkeypatch):
    calm_down(monkeypatch)


def fake_speed(run, films, repeats=10):
    latency = FAKE_LATENCY_MS[run.__self__.runtime]
    return {"latency_ms": latency, "images_per_s": 1000 / latency, "repeats": repeats}


def film(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A film-like uint8 image: a slope, a bright blob, a striped region and noise, each film its own."""
    y, x = np.mgrid[0:size, 0:size]
    cx, cy, spread = rng.uniform(10, size - 10), rng.uniform(10, size - 10), rng.uniform(30, 200)
    pixels = rng.uniform(10, 90) + rng.uniform(-1, 1) * x + 120 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / spread)
    pixels += 40 * np.sin(x / rng.uniform(2, 9)) * (y > rng.uniform(10, size - 10)) + rng.normal(0, 12, x.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def make_dataset(out: Path, model_dir: Path, *, per_fold: int = 60, cache: int = SIZE) -> Path:
    """A prepared dataset (manifest.csv, images-<cache>.npy, prepare.json) of 4 folds whose labels are the float32
    model's own answers: its accuracy is 100 %, so every film a runtime changes costs 100 / per_fold points.
    A few partial labels (``pneumonia``), which have no 4-class answer, are mixed in and must be left out."""
    rng = np.random.default_rng(0)
    images = np.stack([film(rng, cache) for _ in range(4 * per_fold)])
    out.mkdir(parents=True)
    np.save(out / f"images-{cache}.npy", images)
    answers = Predictor(model_dir).probabilities(list(images)).argmax(1)
    labels = [CLASSES[k] for k in answers]
    labels[::17] = ["pneumonia"] * len(labels[::17])
    manifest = pd.DataFrame({"fold": np.arange(len(images)) % 4 + 1, "cache_index": np.arange(len(images))})
    manifest["label"] = labels
    manifest.to_csv(out / "manifest.csv", index=False)
    (out / "prepare.json").write_text(json.dumps({"config": {"image_size": cache}}))
    return out


def break_int8(path: Path, coarser: float = 50.0) -> None:
    """A deliberately broken quantisation: every activation's int8 step ``coarser`` times too wide (ranges as if
    calibrated on films far brighter than any), the record updated so that the file still loads."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    scales = {node.input[1] for node in model.graph.node if node.op_type == "QuantizeLinear"}
    assert scales
    for name in scales:  # each shared by its QuantizeLinear and DequantizeLinear pair
        scale = initializers[name]
        scale.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(scale) * np.float32(coarser), name))
    onnx.save(model, path)
    record = json.loads(record_path(path).read_text())
    record["onnx_sha256"] = file_sha256(path)
    record_path(path).write_text(json.dumps(record))


@pytest.fixture(scope="module")
def dataset(tiny_model_dir, tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("runtimes") / "dataset", tiny_model_dir)


@pytest.fixture(scope="module")
def measured(tiny_model_dir, dataset, tmp_path_factory) -> Path:
    """A copy of the tiny model measured on fold 1 with the accuracy check wide open (100 points, 100 % of the answers
    changed): every runtime is eligible, so with the fixed speeds the record chooses onnx-int8."""
    model_dir = tmp_path_factory.mktemp("measured") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    with pytest.MonkeyPatch.context() as patch:
        calm_down(patch)
        measure_runtimes(model_dir, dataset, 1, tolerance=100.0, max_changed=100.0)
    return model_dir


def copy_of(model_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "model"
    shutil.copytree(model_dir, out)
    return out


# ------------------------------------------------------------------------------------------------- the check


def test_accuracy_check_allows_half_a_point_and_no_more():
    films, rng = 200, np.random.default_rng(0)
    labels = rng.integers(0, 4, films)
    reference = np.eye(4)[labels] * 0.7 + 0.075  # right on every film
    reference[:20] = np.eye(4)[(labels[:20] + 1) % 4] * 0.7 + 0.075  # ... but 20: 90 % accuracy

    def wrong(p, films_to_break):
        p = p.copy()
        p[films_to_break] = np.eye(4)[(labels[films_to_break] + 2) % 4] * 0.7 + 0.075
        return p

    one, two = (
        accuracy_check(reference, wrong(reference, [50]), labels),
        accuracy_check(reference, wrong(reference, [50, 51]), labels),
    )
    assert one["reference_accuracy"] == 90.0 and one["accuracy"] == 89.5 and one["change_points"] == -0.5
    assert one["passed"] and one["changed_predictions"] == 1 and one["max_probability_difference"] == pytest.approx(0.7)
    assert not two["passed"] and two["change_points"] == -1.0
    # one film lost and one gained: the accuracy holds, and 2 answers of 200 changed is 1 %, the most allowed
    swapped = wrong(reference, [50])
    swapped[0] = np.eye(4)[labels[0]] * 0.7 + 0.075
    both = accuracy_check(reference, swapped, labels)
    assert both["passed"] and both["change_points"] == 0.0 and both["changed_predictions"] == 2
    assert both["changed_percent"] == 1.0 and both["max_changed_percent"] == 1.0
    # two lost and two gained: the accuracy still holds, but 2 % of the answers changed
    swapped = wrong(reference, [50, 51])
    swapped[:2] = np.eye(4)[labels[:2]] * 0.7 + 0.075
    twice = accuracy_check(reference, swapped, labels)
    assert twice["change_points"] == 0.0 and twice["changed_percent"] == 2.0 and not twice["passed"]
    assert accuracy_check(reference, swapped, labels, max_changed=2.0)["passed"]  # the bound is a setting
    broken = reference.copy()
    broken[3, 0] = np.nan
    assert not accuracy_check(reference, broken, labels)["passed"]  # NaN is never within tolerance
    with pytest.raises(ValueError, match="shapes differ"):
        accuracy_check(reference, reference[:10], labels)


def test_a_broken_int8_quantisation_is_refused(tiny_model_dir, dataset, tmp_path, monkeypatch):
    """The same check passes the int8 model as built and refuses it with its activation ranges far too wide: it
    measures the damage, prints the largest probability difference, and the fastest runtime that passed runs."""
    model_dir = copy_of(tiny_model_dir, tmp_path)
    some = ("torch", "onnx", "onnx-int8")
    # With a 10-point tolerance and 10 % of the answers (a random network has many near-ties: 1 film is 1.8 points
    # here) the int8 model as built passes, and, the fastest, is chosen.
    honest = measure_runtimes(model_dir, dataset, 1, runtimes=some, tolerance=10.0, max_changed=10.0)
    assert honest["candidates"]["onnx-int8"]["eligible"] and honest["chosen"] == "onnx-int8"

    real = runtimes.quantize_int8

    def broken(*args, **kwargs):
        path = real(*args, **kwargs)
        break_int8(path)
        return path

    monkeypatch.setattr(choice, "quantize_int8", broken)
    widened = measure_runtimes(model_dir, dataset, 1, runtimes=some, tolerance=10.0, max_changed=10.0)
    int8 = widened["candidates"]["onnx-int8"]
    assert int8["check"]["change_points"] < -10 and not int8["eligible"] and widened["chosen"] == "onnx"
    assert int8["check"]["changed_predictions"] > 2 * honest["candidates"]["onnx-int8"]["check"]["changed_predictions"]

    # the command, with the 0.5 points
    result = runner.invoke(app, ["runtimes", "--model", str(model_dir), "--dataset", str(dataset), "--fold", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads((model_dir / RECORD_NAME).read_text())
    int8 = record["candidates"]["onnx-int8"]
    assert int8["available"] and int8["check"]["films"] == record["check"]["films"]
    assert not int8["check"]["passed"] and not int8["eligible"] and "failed its accuracy check" in int8["reason"]
    assert "onnx-int8" not in record["ranking"] and record["check"]["tolerance_points"] == 0.5
    assert record["check"]["max_changed_percent"] == 1.0 and int8["check"]["max_changed_percent"] == 1.0
    assert record["chosen"] == "onnx" and record["candidates"]["onnx"]["check"]["passed"]
    assert record["check"]["reference_accuracy"] == 100.0  # the labels are the reference's answers
    line = next(line for line in result.output.splitlines() if line.startswith("onnx-int8"))
    assert "NOT eligible" in line and f"max |dp| {int8['check']['max_probability_difference']:.2e}" in line
    assert f"{int8['check']['changed_predictions']} changed ({int8['check']['changed_percent']:.2f} %)" in line
    assert "chosen: onnx" in result.output
    # and predict runs what the record chose
    assert Predictor(model_dir, runtime="auto").runtime == "onnx"


def test_a_runtime_that_changes_answers_both_ways_is_refused(tiny_model_dir, dataset, tmp_path, monkeypatch):
    """Issue 28: a runtime that rights 3 of the reference's wrong answers and loses 3 right ones keeps the accuracy
    exactly, yet changes 6 answers (over 10 % of the films): refused, the share printed and recorded."""
    model_dir, relabelled = copy_of(tiny_model_dir, tmp_path), tmp_path / "dataset"
    shutil.copytree(dataset, relabelled)
    manifest = pd.read_csv(relabelled / "manifest.csv")
    check = manifest[(manifest.fold == 1) & manifest.label.isin(CLASSES)].index  # the check films, in their order
    answers = [CLASSES.index(label) for label in manifest.loc[check, "label"]]  # the reference's answers
    manifest.loc[check[:3], "label"] = [CLASSES[(a + 1) % 4] for a in answers[:3]]  # the reference wrong on 3
    manifest.to_csv(relabelled / "manifest.csv", index=False)
    films = runtimes.fold_films(relabelled, 1, CLASSES, SIZE)
    # those 3 answered as labelled (righted), the next 3 answered otherwise (lost)
    flipped = {films.images[k].tobytes(): (answers[k] + 1) % 4 for k in range(6)}
    real = choice.load_runner

    class BothWays:
        """The onnx runtime, but with the 6 films' answers changed."""

        runtime = "onnx"

        def __init__(self, runner):
            self.runner = runner

        def run(self, batch):
            probabilities = self.runner.run(batch)
            for k, film in enumerate(batch):
                if film.tobytes() in flipped:
                    probabilities[k] = np.eye(len(CLASSES), dtype=np.float32)[flipped[film.tobytes()]]
            return probabilities

    def load(runtime, *args, **kwargs):
        runner = real(runtime, *args, **kwargs)
        return BothWays(runner) if runtime == "onnx" else runner

    monkeypatch.setattr(choice, "load_runner", load)
    record = measure_runtimes(model_dir, relabelled, 1, runtimes=("torch", "onnx"))
    onnx = record["candidates"]["onnx"]
    assert onnx["check"]["change_points"] == 0.0 and onnx["check"]["changed_predictions"] == 6
    assert onnx["check"]["changed_percent"] == pytest.approx(600 / len(films.labels)) and len(films.labels) < 60
    assert not onnx["check"]["passed"] and not onnx["eligible"] and record["chosen"] == "torch"
    assert f"6 of {len(films.labels)} answers changed" in onnx["reason"] and "at most 1.0 %" in onnx["reason"]
    assert record["check"]["max_changed_percent"] == 1.0 and "1.0 % of the answers changed" in record["rule"]
    line = next(line for line in runtimes.format_record(record).splitlines() if line.startswith("onnx"))
    assert f"6 changed ({onnx['check']['changed_percent']:.2f} %)" in line and "NOT eligible" in line
    assert json.loads((model_dir / RECORD_NAME).read_text())["candidates"]["onnx"]["check"]["changed_predictions"] == 6
    # the same answers within a wider bound: eligible, and the faster
    wider = measure_runtimes(model_dir, relabelled, 1, runtimes=("torch", "onnx"), max_changed=20.0, write=False)
    assert wider["candidates"]["onnx"]["eligible"] and wider["chosen"] == "onnx"


def test_the_check_uses_the_folds_validation_films_only(tiny_model_dir, dataset):
    films = runtimes.fold_films(dataset, 2, CLASSES, SIZE, calibration_films=30)
    manifest = pd.read_csv(dataset / "manifest.csv")
    validation = manifest[(manifest.fold == 2) & manifest.label.isin(CLASSES)]
    assert len(films.labels) == len(validation) < (manifest.fold == 2).sum()  # the partial labels left out
    cache = np.load(dataset / f"images-{SIZE}.npy")
    np.testing.assert_array_equal(films.images[:, 0], cache[validation.cache_index] / np.float32(255))
    assert films.calibration.shape == (30, 1, SIZE, SIZE)
    training = cache[manifest[manifest.fold != 2].cache_index] / np.float32(255)
    assert all((training == film[0]).all(axis=(1, 2)).any() for film in films.calibration)  # training films
    with pytest.raises(ValueError, match="no fold 7"):
        runtimes.fold_films(dataset, 7, CLASSES, SIZE)


def test_a_cache_of_another_size_is_resized_as_predict_resizes(tiny_model_dir, tmp_path):
    from coronet.deploy.predict import model_input

    dataset = make_dataset(tmp_path / "d32", tiny_model_dir, per_fold=8, cache=32)
    films = runtimes.fold_films(dataset, 1, CLASSES, SIZE, calibration_films=4)
    cache = np.load(dataset / "images-32.npy")
    manifest = pd.read_csv(dataset / "manifest.csv")
    rows = manifest[(manifest.fold == 1) & manifest.label.isin(CLASSES)].cache_index
    np.testing.assert_array_equal(films.images, model_input(list(cache[rows]), SIZE))


# ------------------------------------------------------------------------------------- recorded and honoured


def test_the_record(measured, dataset):
    record = json.loads((measured / RECORD_NAME).read_text())
    card = json.loads((measured / "model.json").read_text())
    assert record["format"] == runtimes.FORMAT and record["weights_sha256"] == card["weights_sha256"]
    assert record["machine"] == {**runtimes.machine(), "torch_threads": record["machine"]["torch_threads"]}
    assert record["check"]["dataset"] == str(dataset) and record["check"]["fold"] == 1
    assert record["check"]["tolerance_points"] == 100.0
    expected = set(RUNTIMES) if runtimes.native_bf16() else set(RUNTIMES) - {"torch-bf16"}
    assert {r for r, e in record["candidates"].items() if e["available"]} == expected
    for name in expected:
        entry = record["candidates"][name]
        assert entry["latency_ms"] == FAKE_LATENCY_MS[name] and entry["eligible"]
        assert entry["check"]["films"] == record["check"]["films"] > 0
    assert record["ranking"] == sorted(expected, key=FAKE_LATENCY_MS.get) and record["chosen"] == "onnx-int8"
    int8 = record["candidates"]["onnx-int8"]
    assert int8["file"] == INT8_NAME and int8["sha256"] == file_sha256(measured / INT8_NAME)
    assert record["candidates"]["onnx"]["sha256"] == file_sha256(measured / ONNX_NAME)
    int8_record = json.loads(record_path(measured / INT8_NAME).read_text())
    assert int8_record["weights_sha256"] == card["weights_sha256"]
    calibration = {"method": "percentile 99.999", "films": 100, "dataset": str(dataset), "fold": 1}
    assert int8_record["quantization"]["calibration"] == calibration
    assert not [p.name for p in measured.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_predict_runs_the_recorded_choice_and_runtime_overrides(measured, xray_paths, tmp_path):
    from coronet.data.imageio import read_image

    films = [read_image(p) for p in xray_paths]
    int8 = open_session(measured, measured / INT8_NAME)
    expected_int8 = int8.run(["probabilities"], {"image": Predictor(measured).batch(films)})[0]
    expected_torch = Predictor(measured).probabilities(films)
    assert np.abs(expected_int8 - expected_torch).max() > 1e-4  # the two runtimes are told apart below

    out = tmp_path / "auto.json"
    result = runner.invoke(app, ["predict", *map(str, xray_paths), "--model", str(measured), "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["model"]["runtime"] == "onnx-int8"
    assert document["model"]["runtime_choice"]["record"] == str(measured / RECORD_NAME)
    assert f"runtime: onnx-int8 (the fastest runtime that passed its check ({measured / RECORD_NAME}" in result.stderr
    got = np.array([list(p["probabilities"].values()) for p in document["predictions"]])
    np.testing.assert_allclose(got, expected_int8, atol=1e-6)

    out = tmp_path / "torch.json"
    result = runner.invoke(
        app, ["predict", *map(str, xray_paths), "--model", str(measured), "--runtime", "torch", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text())
    assert document["model"]["runtime"] == "torch" and document["model"]["runtime_choice"]["requested"] == "torch"
    assert "runtime:" not in result.stderr
    got = np.array([list(p["probabilities"].values()) for p in document["predictions"]])
    np.testing.assert_allclose(got, expected_torch, atol=1e-6)


def test_serve_and_health_report_the_recorded_choice(measured, xray_paths, monkeypatch):
    from fastapi.testclient import TestClient

    from coronet.deploy import serve

    for runtime, expected in (("auto", "onnx-int8"), ("torch", "torch"), ("onnx", "onnx")):
        with TestClient(serve.create_app(measured, runtime=runtime, warm_up=False)) as client:
            health = client.get("/v1/health").json()
            assert health["runtime"] == expected and health["runtime_choice"]["requested"] == runtime
            answer = client.post("/v1/predict", files={"file": ("a.jpg", xray_paths[0].read_bytes(), "image/jpeg")})
            assert answer.status_code == 200 and answer.json()["model"]["runtime"] == expected
    assert health["runtime_choice"]["record"] is None  # asked for: no record involved
    # coronet serve passes auto unless told otherwise
    seen = {}
    monkeypatch.setattr(serve, "serve", lambda model, **options: seen.update(options))
    assert runner.invoke(app, ["serve", "--model", str(measured)]).exit_code == 0
    assert seen["runtime"] == "auto"
    assert runner.invoke(app, ["serve", "--model", str(measured), "--runtime", "onnx-int8"]).exit_code == 0
    assert seen["runtime"] == "onnx-int8"


def test_a_stale_record_is_ignored(measured, tmp_path):
    """Other weights, another machine, a rebuilt int8 file, a damaged one, an unreadable record: never used as is."""
    model_dir = copy_of(measured, tmp_path)
    assert Predictor(model_dir, runtime="auto").runtime == "onnx-int8"
    path = model_dir / RECORD_NAME
    good = path.read_text()

    record = json.loads(good)
    record["machine"]["cpu"] = "another CPU"
    path.write_text(json.dumps(record))
    predictor = Predictor(model_dir, runtime="auto")
    assert predictor.runtime == "torch" and "another machine" in predictor.runtime_choice["reason"]

    path.write_text("{not json")
    predictor = Predictor(model_dir, runtime="auto")
    assert predictor.runtime == "torch" and "unreadable" in predictor.runtime_choice["reason"]

    # the int8 file rebuilt (other calibration films) after the check: not the file measured
    path.write_text(good)
    quantize_int8(model_dir, np.random.default_rng(1).random((8, 1, SIZE, SIZE), dtype=np.float32))
    predictor = Predictor(model_dir, runtime="auto")
    assert (
        predictor.runtime == "onnx"
        and "model.int8.onnx is not the file measured" in predictor.info["runtime_choice"]["reason"]
    )

    # the measured int8 file back, then damaged: refused on opening, the next in the ranking runs
    for name in (INT8_NAME, INT8_NAME + ".json"):
        shutil.copy(measured / name, model_dir / name)
    assert Predictor(model_dir, runtime="auto").runtime == "onnx-int8"
    data = bytearray((model_dir / INT8_NAME).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model_dir / INT8_NAME).write_bytes(bytes(data))
    predictor = Predictor(model_dir, runtime="auto")
    assert predictor.runtime == "onnx" and "onnx-int8 could not be loaded" in predictor.runtime_choice["reason"]

    # other weights in the directory (a retrained model), the old record beside them
    other = make_model_dir(tmp_path / "other", seed=1)
    for name in ("model.json", "model.safetensors"):
        shutil.copy(other / name, model_dir / name)
    predictor = Predictor(model_dir, runtime="auto")
    assert predictor.runtime == "torch" and "other weights" in predictor.runtime_choice["reason"]
    choice = choose_runtime(model_dir)
    assert choice.ranking == ("torch",) and choice.record is None


def test_without_a_dataset_only_float32_runtimes_are_eligible(tiny_model_dir, tmp_path):
    model_dir = copy_of(tiny_model_dir, tmp_path)
    result = runner.invoke(app, ["runtimes", "--model", str(model_dir)])
    assert result.exit_code == 0, result.output
    record = json.loads((model_dir / RECORD_NAME).read_text())
    assert record["check"] is None and "no accuracy check" in result.stdout
    assert "onnx-int8: not measured: " in result.stderr and "onnx-int8: not measured" not in result.stdout  # log lines
    candidates = record["candidates"]
    assert not candidates["onnx-int8"]["available"] and "--dataset and --fold" in candidates["onnx-int8"]["reason"]
    assert not (model_dir / INT8_NAME).exists()
    if runtimes.native_bf16():  # measured, but not checked: not eligible
        assert candidates["torch-bf16"]["available"] and not candidates["torch-bf16"]["eligible"]
    assert record["onnx_export"]["parity_random_inputs"] < 1e-4 and candidates["onnx"]["eligible"]
    assert record["ranking"] == ["onnx", "torch"] and record["chosen"] == "onnx"
    assert Predictor(model_dir, runtime="auto").runtime == "onnx"


def test_the_cli_takes_the_fold_from_the_card_and_refuses_a_fold_alone(tiny_model_dir, dataset, tmp_path):
    model_dir = copy_of(tiny_model_dir, tmp_path)
    result = runner.invoke(app, ["runtimes", "--model", str(model_dir), "--fold", "1"])
    assert result.exit_code == 2 and "--fold needs --dataset" in result.output
    result = runner.invoke(app, ["runtimes", "--model", str(model_dir), "--dataset", str(dataset)])
    assert result.exit_code == 2 and "give --fold" in result.output  # the tiny model's card names no fold
    card = json.loads((model_dir / "model.json").read_text())
    card["training"] = {"fold": 3}
    (model_dir / "model.json").write_text(json.dumps(card))
    result = runner.invoke(app, ["runtimes", "--model", str(model_dir), "--dataset", str(dataset)])
    assert result.exit_code == 0, result.output
    assert json.loads((model_dir / RECORD_NAME).read_text())["check"]["fold"] == 3
    result = runner.invoke(app, ["runtimes", "--model", str(model_dir), "--dataset", str(dataset), "--fold", "9"])
    assert result.exit_code == 2 and "no fold 9" in result.output


# ----------------------------------------------------------------------------------------- the runtimes


def test_int8_quantises_convolutions_only_and_keeps_the_preprocessing_float(tmp_path):
    """A network that equalises and crops inside its graph: those operations stay float32 in the int8 model, its
    input goes to them unquantised, and only convolutions have quantised weights, all but the first."""
    import onnx
    import torch

    from coronet.deploy.export import export_onnx
    from coronet.models.coronet import build_model
    from coronet.models.modeldir import save_model_dir

    torch.manual_seed(0)
    network = build_model(4, "test_resnet", input_size=SIZE, hidden=16, crop="lungs", equalize=True)
    model_dir = save_model_dir(
        network, tmp_path / "model", classes=CLASSES, backbone="test_resnet", input_size=SIZE, hidden=16, dropout=0.5
    )
    export_onnx(model_dir)
    rng = np.random.default_rng(0)
    calibration = np.stack([film(rng) for _ in range(16)])[:, None].astype(np.float32) / 255
    path = quantize_int8(model_dir, calibration)

    float32, int8 = onnx.load(model_dir / ONNX_NAME), onnx.load(path)
    nodes = {output: node for node in int8.graph.node for output in node.output}
    first = next(node for node in int8.graph.node if node.op_type == "QuantizeLinear" and node.input[0] in nodes)
    before, todo = [], [first.input[0]]  # everything the first quantised tensor is computed from
    while todo:
        node = nodes.get(todo.pop())
        if node is not None and node not in before:
            before.append(node)
            todo.extend(node.input)
    kinds = {node.op_type for node in before}
    assert {"CumSum", "Resize"} <= kinds  # the equalisation and the crop ...
    assert not kinds & {"QuantizeLinear", "DequantizeLinear"}  # ... in float32, fed the unquantised input
    assert not [node for node in int8.graph.node if node.op_type == "QuantizeLinear" and node.input[0] == "image"]
    preprocessing = ("CumSum", "Resize", "ScatterElements", "GatherElements", "Slice")
    count = lambda graph, kind: sum(node.op_type == kind for node in graph.node)  # noqa: E731
    assert all(count(int8.graph, kind) == count(float32.graph, kind) for kind in preprocessing)
    weights = {tensor.name for tensor in int8.graph.initializer}
    quantized_weights = [
        node for node in int8.graph.node if node.op_type == "DequantizeLinear" and node.input[0] in weights
    ]
    users = [user for dq in quantized_weights for user in int8.graph.node if dq.output[0] in user.input]
    assert users and {user.op_type for user in users} == set(QUANTIZED_OPS) == {"Conv"}
    convolutions = [node for node in int8.graph.node if node.op_type == "Conv"]
    assert convolutions[0] not in users and all(conv in users for conv in convolutions[1:])  # the first is float32
    assert [node.op_type for node in int8.graph.node].count("Gemm") == 2  # the dense head, float32


def test_bf16_computes_the_backbone_in_bfloat16_and_grad_cam_stays_float32(tiny_model_dir, xray_paths):
    import torch

    from coronet.data.imageio import read_image

    films = [read_image(p) for p in xray_paths]
    bf16, reference = Predictor(tiny_model_dir, runtime="torch-bf16"), Predictor(tiny_model_dir)
    seen = []
    network = bf16._runner.forward
    inner = network.model if hasattr(network, "model") else network
    hook = inner.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    got = bf16.probabilities(films)
    hook.remove()
    assert seen == [torch.bfloat16] and got.dtype == np.float32
    assert next(inner.backbone.parameters()).dtype == torch.bfloat16
    assert next(bf16.model.parameters()).dtype == torch.float32  # the network Grad-CAM uses
    expected = reference.probabilities(films)
    assert 0 < np.abs(got - expected).max() < 0.05  # bfloat16's rounding, no more
    assert bf16.info["runtime"] == "torch-bf16"


def test_the_runtime_names_agree():
    from coronet.cli.deploy import Runtime
    from coronet.training.module import cpu_has_native_bf16

    assert [r.value for r in Runtime] == ["auto", *RUNTIMES]
    assert runtimes.native_bf16() == cpu_has_native_bf16()
    with pytest.raises(ValueError, match="unknown runtime"):
        Predictor(Path("unused"), runtime="int4")


def test_the_record_is_written_atomically(measured, tmp_path, monkeypatch):
    model_dir = copy_of(measured, tmp_path)
    before = (model_dir / RECORD_NAME).read_text()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        runtimes.write_record(model_dir, {"format": runtimes.FORMAT})
    assert (model_dir / RECORD_NAME).read_text() == before  # the old record intact ...
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(p.name for p in measured.iterdir())  # no leftovers


@pytest.mark.parametrize(
    "arguments, words",
    [
        (["--model", "{tmp}/none"], "not a model directory"),
        (["--model", "{model}", "--dataset", "{tmp}/none", "--fold", "1"], "no readable manifest.csv"),
        (["--model", "{model}", "--dataset", "{tmp}/uncached", "--fold", "1"], "no 32x32 image cache"),
    ],
)
def test_bad_arguments_are_one_line(tiny_model_dir, tmp_path, arguments, words):
    uncached = tmp_path / "uncached"  # a manifest, but the image cache is gone
    uncached.mkdir()
    pd.DataFrame({"fold": [1, 2], "cache_index": [0, 1], "label": ["covid", "normal"]}).to_csv(
        uncached / "manifest.csv", index=False
    )
    (uncached / "prepare.json").write_text(json.dumps({"config": {"image_size": 32}}))
    values = {"tmp": tmp_path, "model": tiny_model_dir}
    result = runner.invoke(app, ["runtimes", *[a.format(**values) for a in arguments]])
    assert result.exit_code == 2 and words in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tiny_model_dir / RECORD_NAME).exists()
