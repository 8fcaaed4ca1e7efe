"""The `coronet` command end to end on the real data: prepare, then a tiny cross-validation run."""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from conftest import write_xray
from coronet.cli import app
from coronet.cli._app import (
    ConfigFileOption,
    EpochsOption,
    GuardedTyper,
    LoggerOption,
    SeedOption,
    SetOption,
    training_overrides,
)

runner = CliRunner()


def invoke(*args, env=None):
    result = runner.invoke(app, [str(a) for a in args], env=env)
    return result


def test_prepare_then_cv_smoke(data_dir, tmp_path):
    dataset, run = tmp_path / "dataset", tmp_path / "run"
    result = invoke("data", "prepare", "--data", data_dir, "--out", dataset, "--image-size", 32)
    assert result.exit_code == 0, result.output
    assert "| covid | cohen | 423 | 284 | 284 |" in result.output
    manifest = pd.read_csv(dataset / "manifest.csv")
    assert {"path", "label", "source", "patient_id", "sha256", "fold"} <= set(manifest.columns)
    assert set(manifest.label) == {"covid", "normal", "bacterial", "viral"}

    result = invoke(
        "cv", "--dataset", dataset, "--out", run, "--profile", "tiny", "--folds", "1,3", "--epochs", 1, "--no-progress"
    )
    assert result.exit_code == 0, result.output
    predictions = pd.read_csv(run / "predictions.csv")
    assert list(predictions.columns[:8]) == [
        "path",
        "patient_id",
        "fold",
        "label",
        "prob_covid",
        "prob_normal",
        "prob_bacterial",
        "prob_viral",
    ]
    assert sorted(predictions.path) == sorted(manifest[manifest.fold.isin([1, 3])].path)
    card = json.loads((run / "fold-3" / "model" / "model.json").read_text())
    assert card["classes"] == ["covid", "normal", "bacterial", "viral"] and card["training"]["fold"] == 3
    assert "mean of folds" in result.output

    result = invoke("report", run, "--bootstrap", 50)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    headline = [line for line in lines if line.startswith(("accuracy ", "covid recall ", "worst false-COVID"))]
    assert headline == lines[-len(headline) :], "the headline figures are the report's last lines"
    assert headline[0].startswith("accuracy ") and "95% CI" in headline[0]
    assert headline[1].startswith("covid recall ") and "95% CI" in headline[1]
    assert headline[2].startswith("worst false-COVID rate over negative sources ")
    html = (run / "report" / "report.html").read_text()
    assert "data:image/png;base64" in html and "not a medical device" in html


def test_data_dir_from_environment_and_missing_data_message(tmp_path):
    result = invoke("data", "prepare", "--out", tmp_path / "ds", env={"CORONET_DATA": str(tmp_path / "empty")})
    assert result.exit_code == 2
    assert "coronet data fetch" in result.output and "cohen" in result.output.lower()


def test_bad_settings_are_one_line_errors(tmp_path):
    result = invoke("data", "prepare", "--data", tmp_path, "--out", tmp_path / "x", "--split", "random")
    assert result.exit_code == 2
    result = invoke("cv", "--dataset", tmp_path, "--out", tmp_path / "r", "--profile", "nope")
    assert result.exit_code == 2 and "nope" in result.output


BAD_ARGUMENTS = [
    ("cv --folds 1,x", ["cv", "--dataset", "{ds}", "--out", "{tmp}/a", "--folds", "1,x", "--profile", "tiny"]),
    ("cv --backbone nope", ["cv", "--dataset", "{ds}", "--out", "{tmp}/b", "--backbone", "nope", "--profile", "tiny"]),
    ("cv --set nope=1", ["cv", "--dataset", "{ds}", "--out", "{tmp}/c", "--set", "nope=1", "--profile", "tiny"]),
    ("cv --set lr=x", ["cv", "--dataset", "{ds}", "--out", "{tmp}/c", "--set", "lr=x", "--profile", "tiny"]),
    ("cv --folds 9", ["cv", "--dataset", "{ds}", "--out", "{tmp}/d", "--folds", "9", "--profile", "tiny"]),
    ("cv missing dataset", ["cv", "--dataset", "{tmp}/none", "--out", "{tmp}/e", "--profile", "tiny"]),
    ("train --profile nope", ["train", "--dataset", "{ds}", "--out", "{tmp}/f", "--profile", "nope"]),
    ("train --weights missing", ["train", "--dataset", "{ds}", "--out", "{tmp}/g", "--weights", "{tmp}/w.pt"]),
    (
        "data prepare --source folder",
        ["data", "prepare", "--data", "{tmp}/empty", "--out", "{tmp}/h", "--source", "folder"],
    ),
    ("data prepare --split random", ["data", "prepare", "--data", "{data}", "--out", "{tmp}/i", "--split", "random"]),
    ("data fetch --url without =", ["data", "fetch", "--data", "{tmp}/j", "--url", "cohen"]),
    ("finetune --task 7class", ["finetune", "--from", "{run}", "--out", "{tmp}/k", "--task", "7class"]),
    ("finetune from nothing", ["finetune", "--from", "{tmp}/none", "--out", "{tmp}/l"]),
    (
        "evaluate --map covid",
        ["evaluate", "--model", "{model}", "--data", "{tmp}", "--out", "{tmp}/m", "--map", "covid"],
    ),
    (
        "evaluate --source nope",
        ["evaluate", "--model", "{model}", "--data", "{tmp}", "--out", "{tmp}/n", "--source", "nope"],
    ),
    ("report of nothing", ["report", "{tmp}/none"]),
    ("audit --lung-box", ["audit", "{run}", "--lung-box", "1,2,3"]),
    ("audit --folds x", ["audit", "{run}", "--folds", "x"]),
    ("reproduce --count x", ["reproduce", "--data", "{data}", "--out", "{tmp}/o", "--count", "x=1"]),
    ("reproduce --profile nope", ["reproduce", "--data", "{data}", "--out", "{tmp}/p", "--profile", "nope"]),
    ("compare --task bogus", ["compare", "--dataset", "{ds}", "--out", "{tmp}/q", "--task", "bogus"]),
    ("predict --runtime x", ["predict", "{tmp}", "--model", "{model}", "--runtime", "x"]),
    ("export of nothing", ["export", "--onnx", "{tmp}/none"]),
    ("serve of nothing", ["serve", "--model", "{tmp}/none"]),
]


@pytest.mark.parametrize("name, arguments", BAD_ARGUMENTS, ids=[name for name, _ in BAD_ARGUMENTS])
def test_every_command_turns_bad_arguments_into_one_line(
    name, arguments, tmp_path, tiny_cv_run, prepared_dataset, data_dir
):
    (tmp_path / "empty").mkdir()
    values = {
        "tmp": tmp_path,
        "ds": prepared_dataset,
        "run": tiny_cv_run,
        "data": data_dir,
        "model": tiny_cv_run / "fold-1" / "model",
    }
    result = invoke(*[a.format(**values) for a in arguments])
    assert result.exit_code == 2, (name, result.output)
    assert "Traceback" not in result.output and result.exception is None or isinstance(result.exception, SystemExit)
    message = result.output.strip().splitlines()
    assert message and len(message[-1]) < 800, (name, result.output)
    assert not any((tmp_path / d / "config.json").exists() for d in "abcdefg")  # nothing stamped


def test_reproduce_from_imagenet_without_the_import_names_make_weights(data_dir, tmp_path, monkeypatch):
    """--weights imagenet picks the imagenet profile; with nothing imported and the hub offline it stops at once,
    before writing anything, with one line naming `make weights`."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = invoke("reproduce", "--data", data_dir, "--out", tmp_path / "run", "--weights", "imagenet")
    assert result.exit_code == 2, result.output
    said = [line for line in result.output.splitlines() if "make weights" in line]  # beside torch.hub's own line
    assert len(said) == 1 and "no ImageNet weights for 'keras_xception'" in said[0]
    assert not (tmp_path / "run").exists()


def test_reproduce_hands_its_own_options_and_the_training_settings_apart(data_dir, tmp_path, monkeypatch):
    """reproduce's own options become one ReproduceOptions record and the training settings go beside it, so
    --set seed=N is the training seed next to --seed (the selection's), not a second value for one parameter."""
    import coronet.reproduce as package

    calls = []
    monkeypatch.setattr(package, "reproduce", lambda data, out, options, **given: calls.append((options, given)))
    monkeypatch.setattr(package, "overview_lines", lambda overview: ["done"])
    out = tmp_path / "run"
    result = invoke(
        "reproduce", "--data", data_dir, "--out", out, "--seed", 5, "--set", "seed=3", "--epochs", 2,
        "--no-audit", "--bootstrap", 7, "--count", "covid=9", "--final", "--dataset2-per-class", 4,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "done"
    ((options, overrides),) = calls
    assert overrides == {"seed": 3, "epochs": 2}
    assert (options.profile, options.seed, options.n_bootstrap) == ("fast", 5, 7)
    assert not options.audit and options.final and options.progress
    assert options.counts["covid"] == 9 and options.dataset2_per_class == 4


def test_fetch_from_a_local_archive(tmp_path):
    """`coronet data fetch` wiring, with a file:// archive in the Ozturk repository's layout."""
    archive = tmp_path / "ozturk.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for folder in ("Covid-19", "No_findings", "Pneumonia"):
            png = io.BytesIO()
            write_xray(tmp_path / "img.png", seed=len(folder))
            png.write((tmp_path / "img.png").read_bytes())
            zf.writestr(f"COVID-19-master/X-Ray Image DataSet/{folder}/a.png", png.getvalue())
    data = tmp_path / "data"
    result = invoke("data", "fetch", "--data", data, "--source", "ozturk", "--url", f"ozturk={archive.as_uri()}")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (data / "ozturk-dataset2").iterdir()) == ["Covid-19", "No_findings", "Pneumonia"]


def test_settings_from_the_command_line_a_file_and_set(prepared_dataset, tmp_path):
    """Precedence: profile < --config FILE < --set < named options; a setting not given is not touched, and
    --set KEY=none resets one to None."""
    (tmp_path / "recipe.toml").write_text('lr = 0.5\nepochs = 3\nschedule = "cosine"\n')
    result = invoke(
        "cv",
        "--dataset",
        prepared_dataset,
        "--out",
        tmp_path / "run",
        "--profile",
        "tiny",
        "--folds",
        "1",
        "--config",
        tmp_path / "recipe.toml",
        "--set",
        "epochs=2",
        "--epochs",
        "1",
        "--set",
        "train_per_class=none",
        "--set",
        "train_sizes=24",
        "--no-progress",
    )
    assert result.exit_code == 0, result.output
    train = json.loads((tmp_path / "run" / "config.json").read_text())["train"]
    assert train["lr"] == 0.5 and train["schedule"] == "cosine"  # from the file
    assert train["epochs"] == 1  # the named option beats --set, which beats the file
    assert train["train_per_class"] is None and train["train_sizes"] == [24]
    assert train["batch_size"] == 8  # not given anywhere: the tiny profile's
    # a run's own config.json is a valid --config: the same settings again
    again = invoke(
        "cv",
        "--dataset",
        prepared_dataset,
        "--out",
        tmp_path / "run2",
        "--profile",
        "tiny",
        "--folds",
        "1",
        "--config",
        tmp_path / "run" / "config.json",
        "--no-progress",
    )
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "run2" / "config.json").read_text())["train"] == train
    bad = invoke(
        "cv",
        "--dataset",
        prepared_dataset,
        "--out",
        tmp_path / "x",
        "--config",
        tmp_path / "recipe.toml",
        "--profile",
        "tiny",
        "--set",
        "optimizer=sgd",
    )
    assert bad.exit_code == 2 and "optimizer must be one of" in bad.output


def test_training_overrides_precedence_and_absence(tmp_path):
    """A file's settings, then --set's, then the named options', later ones winning; an option not given is
    absent from the overrides (not None), and --set KEY=none resets a setting to None."""
    seen: list[dict] = []
    toy = GuardedTyper()

    @toy.command("train")
    def toy_train(
        context: typer.Context,
        epochs: EpochsOption = None,
        seed: SeedOption = None,
        logger: LoggerOption = None,
        settings: SetOption = None,
        config_file: ConfigFileOption = None,
    ):
        seen.append(training_overrides(context, ("epochs", "seed", "logger")))

    def overrides(*args):
        result = runner.invoke(toy, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return seen[-1]

    recipe = tmp_path / "recipe.toml"
    recipe.write_text('lr = 0.5\nepochs = 3\nschedule = "cosine"\n')
    assert overrides() == {}  # nothing given: nothing overridden, not None
    assert overrides("--epochs", 4) == {"epochs": 4}
    assert overrides("--logger", "csv") == {"logger": "csv"}  # the plain value, not the Enum member
    assert overrides("--config", recipe) == {"lr": 0.5, "epochs": 3, "schedule": "cosine"}
    assert overrides("--config", recipe, "--set", "epochs=2", "--set", "seed=7") == {
        "lr": 0.5,
        "epochs": 2,
        "schedule": "cosine",
        "seed": 7,
    }
    assert overrides("--epochs", 1, "--config", recipe, "--set", "epochs=2") == {
        "lr": 0.5,
        "epochs": 1,
        "schedule": "cosine",
    }
    assert overrides("--set", "train_per_class=none") == {"train_per_class": None}


def test_the_cli_offers_every_runtime_the_predictor_has():
    from coronet.cli._app import Runtime
    from coronet.deploy.predict import RUNTIMES

    assert [r.value for r in Runtime] == ["auto", *RUNTIMES]


def test_version():
    from coronet import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"coronet {__version__}"
