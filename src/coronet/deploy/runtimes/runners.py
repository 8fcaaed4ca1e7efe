"""The four runtimes a model runs on, each loaded from a model directory and run on ready model input.

Model input is ``(N, 1, S, S)`` float32 in [0, 1] (:func:`model_input`); every runtime turns it into class
probabilities, the film's preprocessing and normalisation being inside the network. The predictor
(:class:`coronet.deploy.predict.Predictor`) and the measurement (:func:`coronet.deploy.runtimes.measure_runtimes`)
both run a model through a :class:`Runner`, so what is measured is what predicts.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...data.imageio import resize_square
from ...models.modeldir import inference_model, load_model_dir
from ..export import ONNX_NAME, open_session

#: The runtimes: PyTorch in float32 (the reference) or bfloat16, ONNX Runtime on the float32 export or on its
#: static int8 quantisation (:func:`coronet.deploy.runtimes.quantize_int8`).
RUNTIMES = ("torch", "torch-bf16", "onnx", "onnx-int8")
#: The runtime every other is checked against, and the one that runs when nothing else may.
REFERENCE = "torch"
INT8_NAME = "model.int8.onnx"


def measure_hint(model_dir: str | os.PathLike) -> str:
    """What to run to measure the runtimes (and build the int8 model) of ``model_dir``."""
    return f"run `coronet runtimes --model {model_dir} --dataset DATASET --fold K`"


def onnx_file(runtime: str) -> str | None:
    """The ONNX file an ONNX runtime loads from the model directory (None: a PyTorch runtime)."""
    return {"onnx": ONNX_NAME, "onnx-int8": INT8_NAME}.get(runtime)


def model_input(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """The model input for decoded 2-D uint8 films of any size: ``(N, 1, size, size)`` float32 in [0, 1]."""
    square = [resize_square(np.asarray(image, dtype=np.uint8), size) for image in images]
    if not square:
        return np.zeros((0, 1, size, size), dtype=np.float32)
    return (np.stack(square)[:, None] / np.float32(255.0)).astype(np.float32)


def bf16_network(model: torch.nn.Module, card: dict) -> torch.nn.Module:
    """A bfloat16 copy of the network for the ``torch-bf16`` runtime (the card's test-time augmentation included).

    Only the backbone and the head compute in bfloat16, from weights converted once; the film's
    preprocessing (equalisation, crop) and normalisation stay in float32, and the logits come back as
    float32. Fast only on a CPU with native bf16 (AVX512-BF16 or AMX); its accuracy is checked by
    :func:`coronet.deploy.runtimes.measure_runtimes` before the automatic choice may pick it.
    """
    network = copy.deepcopy(model)
    backbone, head = network.get_submodule("backbone"), network.get_submodule("head")
    backbone.to(torch.bfloat16)
    head.to(torch.bfloat16)
    backbone.register_forward_pre_hook(
        lambda module, args: (args[0].to(torch.bfloat16, memory_format=torch.channels_last), *args[1:])
    )
    head.register_forward_hook(lambda module, args, output: output.float())
    return inference_model(network, card)


def load_for_inference(model_dir: str | os.PathLike) -> tuple[torch.nn.Module, dict, torch.nn.Module]:
    """(the float32 model in channels_last, its card, the network that predicts: the model with the card's
    test-time augmentation)."""
    model, card = load_model_dir(model_dir)
    # channels_last: ~1.5x faster convolutions on the CPU (measured, benchmarks/inference.py), as in training.
    model = model.to(memory_format=torch.channels_last)
    return model, card, inference_model(model, card)


@dataclass(frozen=True)
class Runner:
    """One runtime of one model, loaded: :meth:`run` gives class probabilities for model input."""

    runtime: str
    forward: torch.nn.Module  # the PyTorch network it runs (the float32 network, unused, for the ONNX runtimes)
    session: Any = None  # the ONNX Runtime session of the ONNX runtimes

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities for a ready model input ``(N, 1, S, S)`` float32 in [0, 1]."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self.session is not None:
            return self.session.run(["probabilities"], {"image": batch})[0]
        with torch.inference_mode():
            tensor = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            return torch.softmax(self.forward(tensor).float(), dim=1).numpy()


def load_runner(
    runtime: str,
    model_dir: Path,
    model: torch.nn.Module,
    card: dict,
    network: torch.nn.Module,
    onnx_path: str | os.PathLike | None = None,
) -> Runner:
    """``runtime`` of the model directory's model (loaded: ``model``, ``card``, ``network`` as
    :func:`load_for_inference` gives them). An ONNX runtime opens its file (``onnx_path``, default
    :func:`onnx_file` in ``model_dir``) checked against the weights (:func:`coronet.deploy.export.open_session`:
    ``ModelLoadError`` when missing, damaged or stale)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    if runtime in ("onnx", "onnx-int8"):
        hint = None
        if runtime == "onnx-int8" and onnx_path is None:
            onnx_path, hint = model_dir / INT8_NAME, measure_hint(model_dir)
        return Runner(runtime, network, open_session(model_dir, onnx_path, hint=hint))
    if runtime == "torch-bf16":
        return Runner(runtime, bf16_network(model, card))
    return Runner(runtime, network)
