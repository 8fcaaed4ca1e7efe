"""The versions of coronet and of the packages that shape its results, for run records and model cards.

>>> from coronet.versions import package_versions
>>> package_versions()["torch"]  # doctest: +SKIP
'2.14.1'

Read with :mod:`importlib.metadata` (the installed distributions), without importing the packages.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import __version__

#: Distributions recorded, by their names on PyPI: what trains, reads, scores, serves and explains.
PACKAGES = (
    "coronet",
    "torch",
    "torchvision",
    "timm",
    "lightning",
    "numpy",
    "pandas",
    "pillow",
    "scikit-learn",
    "scipy",
    "safetensors",
    "pydicom",
    "onnx",
    "onnxruntime",
    "fastapi",
    "uvicorn",
    "grad-cam",
)


def package_versions() -> dict[str, str | None]:
    """``{distribution: version}`` for :data:`PACKAGES`, ``None`` for one that is not installed.

    coronet's own entry is ``coronet.__version__``, the one place its version is written: an editable
    install's metadata keeps the version it was installed with until it is installed again.
    """
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        if name == "coronet":
            versions[name] = __version__
            continue
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions


__all__ = ["PACKAGES", "package_versions"]
