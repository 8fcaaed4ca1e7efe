"""coronet: a faithful, leakage-free reproduction of CoroNet (Khan et al. 2020), and a tool to use it.

Layers, each importing only those before it (docs/ARCHITECTURE.md):
``data`` -> ``models`` -> ``training`` | ``deploy`` -> ``evaluation`` -> ``reproduce``, ``cli``.
Shared vocabulary beside them: ``tasks``, ``paper``, ``layout``, ``errors``, ``config``.
"""

__version__ = "0.3.0"  # the one place: pyproject.toml reads it (tool.setuptools.dynamic)
