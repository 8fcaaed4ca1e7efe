"""Using a trained model: ``predict``, ``export``, ``serve``."""

from __future__ import annotations
