"""Packaging: one version, every import declared, exact pins inside the declared ranges, ``python -m coronet``."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import coronet
from coronet import versions
from coronet.versions import PACKAGES, package_versions

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def requirements(*groups: str) -> dict[str, Requirement]:
    """``{canonical name: requirement}`` of the core dependencies (group ``""``) and the named extras,
    without the extras' references to coronet itself."""
    lines = [
        line
        for group in groups
        for line in (PROJECT["dependencies"] if group == "" else PROJECT["optional-dependencies"][group])
    ]
    reqs = [Requirement(line) for line in lines]
    return {canonicalize_name(r.name): r for r in reqs if canonicalize_name(r.name) != "coronet"}


def extra_closure(extra: str) -> set[str]:
    """``extra`` and the extras it pulls in through ``coronet[...]``."""
    found, todo = set(), [extra]
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        for line in PROJECT["optional-dependencies"][name]:
            req = Requirement(line)
            if canonicalize_name(req.name) == "coronet":
                todo += sorted(req.extras)
    return found


def third_party_imports(folder: Path) -> dict[str, set[str]]:
    """``{top-level module: files}`` for every absolute import of a module outside the standard library and coronet."""
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "coronet" and not (folder / f"{top}.py").exists():
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def undeclared(folder: Path, declared: dict[str, Requirement]) -> dict[str, set[str]]:
    providers = packages_distributions()
    missing = {}
    for module, files in third_party_imports(folder).items():
        dists = {canonicalize_name(d) for d in providers.get(module, [module])}
        if not dists & set(declared):
            missing[module] = files
    return missing


# --------------------------------------------------------------------------- one version


def test_the_version_is_written_once_and_read_by_pyproject():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "coronet.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", coronet.__version__)


def test_citation_and_changelog_name_this_version():
    citation = (ROOT / "CITATION.cff").read_text()
    assert re.search(rf"^version: \"?{re.escape(coronet.__version__)}\"?$", citation, re.MULTILINE)
    assert re.search(rf"^## \[{re.escape(coronet.__version__)}\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)


def test_the_license_file_is_the_one_pyproject_names():
    assert PROJECT["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


# --------------------------------------------------------------------------- dependencies


def test_every_import_of_the_package_is_a_declared_dependency():
    declared = requirements("", *PROJECT["optional-dependencies"])
    assert undeclared(ROOT / "src" / "coronet", declared) == {}


def test_every_import_of_the_tests_and_benchmarks_is_in_the_dev_extra():
    declared = requirements("", *extra_closure("dev"))
    assert undeclared(ROOT / "tests", declared) == {}
    assert undeclared(ROOT / "benchmarks", declared) == {}


def test_dev_brings_every_other_extra_and_reproduce_needs_no_test_tool():
    assert extra_closure("dev") == set(PROJECT["optional-dependencies"])
    run_extras = extra_closure("dicom") | extra_closure("weights")
    assert not {"playwright", "pytest", "ruff", "mypy"} & set(requirements("", *run_extras))
    makefile = (ROOT / "Makefile").read_text()
    assert "reproduce: setup-run" in makefile and "-e '.[dicom,weights]'" in makefile and "-e '.[dev]'" in makefile
    assert "weights: setup-run" in makefile  # `make weights` needs h5py only, not the test tools


def test_constraints_pin_every_declared_package_inside_its_range():
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, pinned = line.partition("==")
            pins[canonicalize_name(name)] = pinned.strip()
    for name, req in requirements("", *PROJECT["optional-dependencies"]).items():
        assert name in pins, f"{name} is declared but not pinned in constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"
    # torch and torchvision are ranges in pyproject, exact here: a newer torch would be a multi-GB download
    assert not any(spec.operator == "==" for spec in requirements("")["torch"].specifier)
    assert pins["torch"] and pins["torchvision"]


# --------------------------------------------------------------------------- package_versions, python -m coronet


def test_package_versions_reads_the_installed_distributions():
    import numpy
    import pandas
    import torch

    found = package_versions()
    assert list(found) == list(PACKAGES)
    assert found["coronet"] == coronet.__version__
    assert found["numpy"] == numpy.__version__ and found["pandas"] == pandas.__version__
    # the distribution's version: torch.__version__ may add the build's local label (2.14.1+cu130)
    assert found["torch"] == torch.__version__.split("+")[0]


def test_package_versions_gives_none_for_a_package_that_is_not_installed(monkeypatch):
    monkeypatch.setattr(versions, "PACKAGES", ("coronet", "no-such-distribution-for-coronet"))
    assert package_versions() == {"coronet": coronet.__version__, "no-such-distribution-for-coronet": None}


@pytest.mark.parametrize("args", [["--help"], ["data", "--help"]])
def test_python_m_coronet_is_the_coronet_command(args):
    run = subprocess.run([sys.executable, "-m", "coronet", *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Usage: python -m coronet" in run.stdout
    if args == ["--help"]:
        assert all(command in run.stdout for command in ("reproduce", "predict", "serve", "data"))
