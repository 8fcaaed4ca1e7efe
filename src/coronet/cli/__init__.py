"""The ``coronet`` command. Each sub-command is a thin shell over one module's function.

Commands live by purpose: ``data`` (sources, preparation), ``experiments`` (training, cross-validation, reports),
``deploy`` (prediction, export, serving), ``weights`` (ImageNet weights).
"""

from __future__ import annotations

import sys

from . import data, deploy, experiments, weights  # noqa: F401  (importing registers the commands)
from ._app import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
