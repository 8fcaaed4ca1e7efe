"""Running the service: uvicorn's options for it, the start, and a stop on SIGTERM or SIGINT that exits 0."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path

import torch

from ...models.modeldir import read_card
from ..predict import training_facts
from .app import create_app
from .limits import (
    CONNECTION_ROOM,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MAX_UPLOADS,
    DEFAULT_UPLOAD_TIMEOUT,
    GRACEFUL_SHUTDOWN_SECONDS,
    default_max_concurrency,
    default_model_threads,
)
from .protocol import GuardedH11Protocol

__all__ = ["serve", "server_options"]

log = logging.getLogger("coronet.serve")


def server_options(
    max_concurrency: int, upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT, max_uploads: int = DEFAULT_MAX_UPLOADS
) -> dict:
    """The ``uvicorn.Config`` options :func:`serve` runs with (the tests run their servers with them too).

    Open connections are capped at ``max_uploads + max_concurrency`` plus :data:`CONNECTION_ROOM` (32)
    (``limit_concurrency``: beyond it uvicorn answers a plain-text 503, so the service's own JSON 503s for full
    upload or prediction slots come first), and :class:`GuardedH11Protocol` gives a connection
    ``upload_timeout`` seconds to complete a request's headers and closes idle connections to make room at
    the cap; a keep-alive connection with nothing more to send is closed after 5 s; on shutdown the requests
    in progress get :data:`GRACEFUL_SHUTDOWN_SECONDS`.
    """
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": upload_timeout})
    return {
        "http": protocol,
        "limit_concurrency": max_uploads + max_concurrency + CONNECTION_ROOM,
        "timeout_keep_alive": 5,
        "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
    }


def serve(
    model_dir: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    runtime: str = "auto",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    model_threads: int | None = None,
    max_concurrency: int | None = None,
    max_uploads: int = DEFAULT_MAX_UPLOADS,
    log_level: str = "info",
    upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT,
) -> None:
    """Load the model and serve it with uvicorn until SIGINT or SIGTERM.

    ``max_uploads`` caps the uploads being received, ``max_concurrency`` (default:
    :func:`default_max_concurrency`) the predictions in progress (a JSON 503 beyond either); the connections
    are bounded as :func:`server_options` says, so a flood of connections queues neither without bound nor
    with its uploads in memory, and idle ones cannot lock anyone out. On SIGTERM or SIGINT the server stops
    accepting, answers the uploads still arriving with a JSON 503, finishes the predictions in progress (those
    still running after :data:`GRACEFUL_SHUTDOWN_SECONDS` are cancelled, and answered 503), logs one line, and
    returns, so the process exits with status 0 (uvicorn would re-raise the signal and die by it, status -15 /
    143).
    """
    import uvicorn

    model_threads = model_threads or default_model_threads()
    # PyTorch gives every computation all the CPUs' threads by default; model_threads computations at
    # once would then run model_threads x CPUs threads and slow each other down: share the CPUs out.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // model_threads))
    slots = max_concurrency or default_max_concurrency(model_threads)
    app = create_app(
        model_dir,
        runtime=runtime,
        max_upload_bytes=max_upload_bytes,
        max_pixels=max_pixels,
        model_threads=model_threads,
        max_concurrency=slots,
        max_uploads=max_uploads,
        upload_timeout=upload_timeout,
    )
    choice = app.state.predictor.runtime_choice
    if choice["record"] or (Path(app.state.predictor.model_dir) / "runtimes.json").exists():
        log.warning("coronet serve: runtime %s (%s)", app.state.predictor.runtime, choice["reason"])
    warning = training_facts(read_card(model_dir)[0])["source_warning"]
    if warning:
        log.warning("coronet serve: warning: %s", warning)
    options = server_options(slots, upload_timeout, max_uploads)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level, **options))
    _run_to_a_clean_exit(server)


def _run_to_a_clean_exit(server) -> None:
    """``server.run()``, where SIGINT and SIGTERM end in a graceful shutdown and a return, not in death by the signal.

    uvicorn catches both signals while it runs, shuts down gracefully, restores the handlers it found and then
    raises the signal again, which kills the process under the default handler. The handlers it finds here stop
    the server instead (the same as its own), so the raised signal only repeats a stop that has already happened.
    """
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        server.run()
        return

    def stop(signum, frame) -> None:
        server.should_exit = True

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
