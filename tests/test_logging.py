"""The library logs through ``logging``; each command prints those lines once, on the stream they belong to."""

from __future__ import annotations

import logging
import zipfile

import typer
from typer.testing import CliRunner

from conftest import write_xray
from coronet.cli import app
from coronet.cli._app import EchoHandler, GuardedTyper

runner = CliRunner()


def _ozturk_archive(tmp_path):
    archive = tmp_path / "ozturk.zip"
    write_xray(tmp_path / "img.png", seed=1)
    with zipfile.ZipFile(archive, "w") as zf:
        for folder in ("Covid-19", "No_findings", "Pneumonia"):
            zf.write(tmp_path / "img.png", f"COVID-19-master/X-Ray Image DataSet/{folder}/a.png")
    return archive


def test_a_commands_library_lines_are_printed_once_and_its_handler_removed(tmp_path):
    archive = _ozturk_archive(tmp_path)
    coronet = logging.getLogger("coronet")
    handlers, level = list(coronet.handlers), coronet.level
    for attempt in ("first", "second"):
        data = tmp_path / attempt
        result = runner.invoke(
            app, ["data", "fetch", "--data", str(data), "--source", "ozturk", "--url", f"ozturk={archive.as_uri()}"]
        )
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        assert any(line.startswith("ozturk: downloading file://") for line in lines), result.output
        assert f"ozturk: installed 3 files at {data / 'ozturk-dataset2'}" in lines
        assert len(lines) == len(set(lines)), "a line printed twice"
        assert not result.stderr
        # the command's handler is gone afterwards: none stacks up over invocations
        assert coronet.handlers == handlers and coronet.level == level
        assert not any(isinstance(h, EchoHandler) for h in logging.getLogger().handlers)


def _toy_app() -> GuardedTyper:
    toy = GuardedTyper()

    @toy.command("talk")
    def talk():
        logging.getLogger("coronet.toy").info("an info line")
        logging.getLogger("coronet.toy").debug("a debug line")
        logging.getLogger("coronet.serve").warning("coronet serve: a warning")
        typer.echo("the result")

    @toy.command("measure", logs_to_stderr=True)
    def measure():
        logging.getLogger("coronet.toy").info("an info line")
        typer.echo("the result")

    return toy


def test_info_goes_to_stdout_warnings_to_stderr_once():
    result = runner.invoke(_toy_app(), ["talk"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "an info line\nthe result\n"  # in the order logged; DEBUG is not shown
    assert result.stderr == "coronet serve: a warning\n"  # serve's warnings: on stderr, exactly once


def test_a_command_whose_stdout_is_its_result_logs_to_stderr():
    result = runner.invoke(_toy_app(), ["measure"])
    assert result.exit_code == 0, result.output
    assert result.stdout == "the result\n" and result.stderr == "an info line\n"
