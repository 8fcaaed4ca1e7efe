"""This machine as a runtime record needs it: the CPU (model, cores, instruction sets) and the libraries' versions."""

from __future__ import annotations

import os
import platform

import torch

#: What must be the same for a record to hold on this machine (the thread counts are not: serve changes them).
MACHINE_KEYS = ("cpu", "cpus", "avx2", "avx512_vnni", "native_bf16", "torch", "onnxruntime")


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): the probes of
    :func:`coronet.training.module.cpu_has_native_bf16`, without importing the training stack."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name)() for name in probes if hasattr(torch.cpu, name))


def machine() -> dict:
    """This machine as a record needs it: CPU, cores, instruction sets, library versions, thread counts."""
    name, flags = _cpuinfo()
    try:
        import onnxruntime

        ort_version: str | None = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "cpu": name,
        "cpus": os.cpu_count(),
        "avx2": "avx2" in flags,
        "avx512_vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
        "native_bf16": native_bf16(),
        "torch": torch.__version__,
        "onnxruntime": ort_version,
        "torch_threads": torch.get_num_threads(),
    }


def _cpuinfo() -> tuple[str, set[str]]:
    """The CPU's model name and instruction-set flags from ``/proc/cpuinfo`` (elsewhere: platform's name, none)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    name = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
                if flags and name:
                    break
    except OSError:
        pass
    return name, flags
