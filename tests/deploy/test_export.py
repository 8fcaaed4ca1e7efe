"""ONNX export: parity with PyTorch on real films, dynamic batch, refusal of damaged or stale exports, the CLI."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from coronet.cli import app
from coronet.data.imageio import read_image
from coronet.deploy.export import ONNX_NAME, open_session, record_path
from coronet.deploy.predict import Predictor
from coronet.models.modeldir import ModelLoadError
from deploy_helpers import make_model_dir

runner = CliRunner()


def assert_onnx_parity(model_dir, paths, min_spread: float) -> None:
    """ONNX Runtime's probabilities within 1e-4 of PyTorch's on real films that get clearly different answers."""
    images = [read_image(p) for p in paths]
    torch_p = Predictor(model_dir).probabilities(images)
    onnx_p = Predictor(model_dir, runtime="onnx").probabilities(images)
    assert onnx_p.shape == torch_p.shape == (len(images), 4)
    assert np.abs(onnx_p - torch_p).max() < 1e-4
    assert np.ptp(torch_p, axis=0).max() > min_spread  # the films differ: the agreement is not trivial


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model directory, exported with `coronet export --onnx` (which loads the model once)."""
    import coronet.deploy.export
    import coronet.models.modeldir

    model_dir = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    calls = []

    def counted(module, name):
        real = getattr(module, name)
        return lambda *args, **kwargs: calls.append(name) or real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        for module, name in (
            (coronet.models.modeldir, "load_model_dir"),
            (coronet.deploy.export, "load_model_dir"),
            (coronet.deploy.export, "open_session"),
        ):
            patch.setattr(module, name, counted(module, name))
        result = runner.invoke(app, ["export", "--onnx", str(model_dir)])
    assert result.exit_code == 0, result.output
    assert "max |p_onnx - p_torch|" in result.output
    assert sorted(calls) == ["load_model_dir", "open_session"]  # one load, one session, for export and check
    return model_dir


def test_onnx_parity_of_the_papers_backbone(xray_paths, tmp_path):
    """legacy_xception at 150 px, random weights: ONNX Runtime gives PyTorch's probabilities on real films."""
    from coronet.deploy.export import export_onnx

    # sharpen=100: a random Xception gives every film nearly the same probabilities otherwise (spread ~5e-4).
    model_dir = make_model_dir(tmp_path / "xception", backbone="legacy_xception", input_size=150, sharpen=100.0)
    export_onnx(model_dir)
    assert_onnx_parity(model_dir, xray_paths, min_spread=0.01)


def test_a_model_validated_with_tta_is_predicted_and_exported_with_it(xray_paths, tmp_path):
    """The card's test-time augmentation is applied by every runtime: the mean of the film and its mirror."""
    from coronet.deploy.export import export_onnx

    model_dir = make_model_dir(tmp_path / "tta", tta="hflip", sharpen=30.0)
    plain_dir = make_model_dir(tmp_path / "plain", sharpen=30.0)
    images = [read_image(p) for p in xray_paths]
    predictor, plain = Predictor(model_dir), Predictor(plain_dir)
    batch = predictor.batch(images)
    expected = (plain.run(batch) + plain.run(np.ascontiguousarray(batch[..., ::-1]))) / 2
    np.testing.assert_allclose(predictor.probabilities(images), expected, atol=1e-5)
    assert np.abs(plain.probabilities(images) - expected).max() > 1e-3  # the mirror changes the answer
    assert predictor.info["tta"] == "hflip" and plain.info["tta"] is None
    export_onnx(model_dir)
    assert json.loads(record_path(model_dir / ONNX_NAME).read_text())["tta"] == "hflip"
    assert_onnx_parity(model_dir, xray_paths, min_spread=0.01)


def test_a_card_that_drops_the_tta_is_refused(tmp_path):
    model_dir = make_model_dir(tmp_path / "tta", tta="hflip")
    card = json.loads((model_dir / "model.json").read_text())
    card["inference"] = {"tta": None}
    (model_dir / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="tta"):
        Predictor(model_dir)


def test_failed_export_leaves_nothing_behind(tiny_model_dir, tmp_path, monkeypatch):
    import torch

    from coronet.deploy.export import export_onnx

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    before = sorted(p.name for p in model_dir.iterdir())

    def broken_export(model, args, path, **options):
        open(path, "wb").write(b"half an ONNX file")
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="exporter failed"):
        export_onnx(model_dir)
    assert sorted(p.name for p in model_dir.iterdir()) == before


def test_onnx_probabilities_match_pytorch_on_real_films(exported, data_dir):
    films = (
        sorted((data_dir / "cohen-covid" / "images").glob("*.jpg"))[:8]
        + sorted((data_dir / "kaggle-pneumonia" / "chest_xray" / "train" / "PNEUMONIA").glob("*.jpeg"))[:8]
    )
    assert_onnx_parity(exported, films, min_spread=0.02)


def test_export_record_and_dynamic_batch(exported):
    record = json.loads(record_path(exported / ONNX_NAME).read_text())
    card = json.loads((exported / "model.json").read_text())
    assert record["weights_sha256"] == card["weights_sha256"] and record["classes"] == card["classes"]
    session = open_session(exported)
    assert session.get_inputs()[0].shape[1:] == [1, 64, 64] and isinstance(session.get_inputs()[0].shape[0], str)
    for n in (1, 7):
        logits, probabilities = session.run(None, {"image": np.random.rand(n, 1, 64, 64).astype(np.float32)})
        assert logits.shape == probabilities.shape == (n, 4)
        np.testing.assert_allclose(probabilities.sum(1), 1, atol=1e-5)


def test_damaged_or_stale_exports_are_refused(exported, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(exported, model_dir)
    onnx = model_dir / ONNX_NAME
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="SHA-256 differs"):
        Predictor(model_dir, runtime="onnx")
    # Other weights in the directory (a retrained model), the old export beside them.
    shutil.copy(exported / ONNX_NAME, onnx)
    other = make_model_dir(tmp_path / "other", seed=1)
    for name in ("model.json", "model.safetensors"):
        shutil.copy(other / name, model_dir / name)
    with pytest.raises(ModelLoadError, match="exported from other weights"):
        Predictor(model_dir, runtime="onnx")
    record_path(onnx).unlink()
    with pytest.raises(ModelLoadError, match="export record"):
        open_session(model_dir)
    onnx.unlink()
    with pytest.raises(ModelLoadError, match="coronet export --onnx"):
        open_session(model_dir)


def test_cli_predict_with_onnx_runtime(exported, xray_paths, tmp_path):
    rows = {}
    for runtime in ("torch", "onnx"):
        out = tmp_path / f"{runtime}.csv"
        result = runner.invoke(
            app, ["predict", *map(str, xray_paths), "--model", str(exported), "--runtime", runtime, "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        rows[runtime] = list(csv.DictReader(open(out, newline="")))
    assert [r["path"] for r in rows["onnx"]] == [r["path"] for r in rows["torch"]] == list(map(str, xray_paths))
    for a, b in zip(rows["torch"], rows["onnx"]):
        assert a["pred"] == b["pred"]
        assert max(abs(float(a[k]) - float(b[k])) for k in a if k.startswith("prob_")) < 1e-4


def test_cli_predict_onnx_without_an_export_says_how_to_make_one(tiny_model_dir, xray_paths):
    assert not (tiny_model_dir / ONNX_NAME).exists()
    result = runner.invoke(app, ["predict", str(xray_paths[0]), "--model", str(tiny_model_dir), "--runtime", "onnx"])
    assert result.exit_code == 2
    message = " ".join(result.output.split())
    assert "no ONNX export" in message and f"coronet export --onnx {tiny_model_dir}" in message
