"""The one error of ``coronet data fetch``."""

from __future__ import annotations

from ...errors import CoronetError


class FetchError(CoronetError, RuntimeError):
    """A source could not be downloaded, verified or installed (one line, names the source)."""
