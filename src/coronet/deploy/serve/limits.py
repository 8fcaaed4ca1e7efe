"""The service's limits: their defaults, and the slots that count uploads and predictions in progress."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from ...data.imageio import DEFAULT_MAX_PIXELS
from .errors import ApiError

__all__ = [
    "CONNECTION_ROOM",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_UPLOADS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_UPLOAD_TIMEOUT",
    "GRACEFUL_SHUTDOWN_SECONDS",
    "Slots",
    "default_max_concurrency",
    "default_model_threads",
]

DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # a large CR/DX DICOM is ~20-30 MB
DEFAULT_UPLOAD_TIMEOUT = 30.0  # seconds without a byte of the body
#: Bodies being received at once. A slow client holds one of these, never a prediction slot; the bodies are
#: spooled to disk past 1 MiB while they arrive, so the bound is on open work more than on memory.
DEFAULT_MAX_UPLOADS = 64
GRACEFUL_SHUTDOWN_SECONDS = 5  # on SIGTERM, predictions in progress get this long to finish
#: Open connections allowed beyond the upload and prediction slots: health checks, the card, the page, and the
#: requests being refused with a JSON 503, so that uvicorn's own plain-text 503 stays behind both limits.
CONNECTION_ROOM = 32


def default_model_threads() -> int:
    """Concurrent model computations when not set: the number of CPUs, at least 2 and at most 8."""
    return min(8, max(2, os.cpu_count() or 2))


def default_max_concurrency(model_threads: int) -> int:
    """Predictions in progress when not set: 4 per model thread, plus 8."""
    return 4 * model_threads + 8


class Slots:
    """At most ``limit`` holders at a time; one more is refused at once with a JSON 503 and ``Retry-After``.

    Never a queue: a burst beyond the limit costs neither memory nor clients waiting without knowing why.
    Counted on the event loop only (the routes take and give back), so no lock is needed.
    """

    def __init__(self, limit: int, what: str):
        self.limit, self.what, self.in_use = limit, what, 0

    def refuse_if_full(self) -> None:
        if self.in_use >= self.limit:
            raise ApiError(
                503,
                f"server busy: {self.in_use} {self.what} (limit {self.limit}); try again shortly",
                headers={"Retry-After": "1"},
            )

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.refuse_if_full()
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
