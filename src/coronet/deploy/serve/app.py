"""The web service: a JSON API over one loaded model, and a page for people at ``/``.

::

    POST /v1/predict   multipart field ``file`` (PNG, JPEG or DICOM); ``cam=true`` (query or form field)
                       adds the Grad-CAM overlay, ``image=true`` the film as the model read it (base64 PNGs)
    GET  /v1/health    {"status": "ok", model name and version, the runtime and why it runs, the upload limit}
    GET  /v1/model     the model card
    GET  /docs         OpenAPI documentation (``/openapi.json``), Swagger UI served from this server
                       (fastapi-offline: no CDN, so it works offline)
    GET  /             the page (``coronet/static``)

The model is loaded once, when the app is created. Model work (decoding,
inference, Grad-CAM) is blocking, so it runs in worker threads while the event
loop keeps accepting requests: decoding and inference at most ``model_threads``
at a time, Grad-CAM in one more thread of its own (it is serialised anyway, see
:class:`coronet.explain.GradCam`; waiting for it never holds a model slot, so
heat maps cannot starve plain predictions). :class:`coronet.predict.Predictor`
is safe to share between them. Prediction requests in progress are capped
(``max_concurrency``): beyond it the answer is a JSON 503 at once, never an
unbounded queue, while ``/v1/health``, the model card and the page are not
counted and keep answering.

Connections are bounded too (:func:`server_options`, used by :func:`serve`):
uvicorn caps open connections at four times ``max_concurrency`` plus 32 (its
503 beyond that is plain text), and :class:`GuardedH11Protocol` keeps sockets
that hold no request from using that room up: a connection must complete a
request's headers within ``upload_timeout`` of opening (or of its previous
answer), else it is closed (answered 408 first if it had sent part of them), and
when the cap is reached a new connection closes the longest-waiting idle one,
so a flood of silent sockets or unfinished headers cannot lock ``/v1/health``
out. On SIGTERM or SIGINT the requests in progress are finished (for up to 5 s)
and the process exits with status 0.

Untrusted input is bounded before it costs anything:

* the request's headers must be complete within ``upload_timeout`` seconds of
  the connection opening, else 408 and the connection is closed;
* the body is read as a stream and refused with 413 once it passes
  ``max_upload_bytes`` (a declared ``Content-Length`` over the cap is refused
  before any of the body is read); an upload that stalls -- no bytes for
  ``upload_timeout`` seconds, or not finished within ten times that -- is
  answered 408 and its connection closed, so stalled clients cannot hold
  prediction slots;
* one file part, few and short other fields; a part's header line at most
  :data:`MAX_PART_HEADER_BYTES` (the multipart parser's limit: a file name of
  about 4,000 characters), refused with a 400 that says so;
* the format is sniffed from the bytes (PNG, JPEG or DICOM; the file name
  and the part's Content-Type are ignored);
* the pixel count is capped by the image reader, checked from the header
  before decoding: ``max_pixels`` (default 40 million, a 16-bit film takes
  several bytes per pixel while it is decoded), and never more than Pillow's
  ``MAX_IMAGE_PIXELS``.

Every refusal is a 4xx with a JSON body ``{"error": "..."}`` that names the
problem; anything unexpected is logged and answered with a 500 in the same
shape, and the server carries on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import signal
import threading
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import anyio
import h11
import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import __version__
from ..data.imageio import ImageReadError, read_image, sniff_format
from ..models.modeldir import read_card
from .explain import fit, overlay, png_bytes
from .predict import Predictor, training_facts

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_UPLOAD_TIMEOUT",
    "GRACEFUL_SHUTDOWN_SECONDS",
    "GuardedH11Protocol",
    "MAX_PART_HEADER_BYTES",
    "create_app",
    "default_max_concurrency",
    "default_model_threads",
    "serve",
    "server_options",
]

log = logging.getLogger("coronet.serve")

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024  # a large CR/DX DICOM is ~20-30 MB
DEFAULT_MAX_PIXELS = 40_000_000  # a large CR/DX film is ~4300 x 3500 (15 million pixels)
ACCEPTED_FORMATS = ("png", "jpeg", "dicom")
_MULTIPART_SLACK = 64 * 1024  # boundaries, part headers and small fields around the file
#: python-multipart's longest header line in a part (Content-Disposition, with the file name); None: no limit
#: (older releases)
MAX_PART_HEADER_BYTES: int | None
try:
    from python_multipart.multipart import DEFAULT_MAX_HEADER_SIZE as MAX_PART_HEADER_BYTES
except ImportError:
    MAX_PART_HEADER_BYTES = None
GRACEFUL_SHUTDOWN_SECONDS = 5  # on SIGTERM, requests in progress get this long to finish
_PREVIEW_SIDE = 512
_TRUE = frozenset({"1", "true", "yes", "on"})
_NOTICE = "Research software. Not a medical device; not for diagnosis."  # for cards written without one

#: The page's Content-Security-Policy: its own files only, images also from data:/blob: URLs.
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class ApiError(HTTPException):
    """A refusal with its status and a message for the client."""


class _UploadTooLarge(Exception):
    pass


class _UploadStalled(Exception):
    pass


DEFAULT_UPLOAD_TIMEOUT = 30.0  # seconds without a byte of the body


class _PredictionSlots:
    """ASGI middleware: at most ``limit`` requests to ``/v1/predict`` in progress; the next is a JSON 503 at once.

    Only predictions count, so health checks, the card and the page answer even when every slot is taken.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit, self.in_progress = app, limit, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("path") != "/v1/predict":
            return await self.app(scope, receive, send)
        if self.in_progress >= self.limit:
            response = JSONResponse(
                {
                    "error": f"server busy: {self.in_progress} predictions in progress (limit "
                    f"{self.limit}); try again shortly"
                },
                status_code=503,
                headers={"Retry-After": "1"},
            )
            return await response(scope, receive, send)
        self.in_progress += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_progress -= 1


class _InFlight:
    """ASGI middleware: counts the HTTP requests in progress, and those cancelled, for the shutdown's log line."""

    def __init__(self, app, counts: dict):
        self.app, self.counts = app, counts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.counts["in_progress"] += 1
        try:
            await self.app(scope, receive, send)
        except asyncio.CancelledError:
            self.counts["cancelled"] += 1
            raise
        finally:
            self.counts["in_progress"] -= 1


def _raw_answer(status: int, reason: str, error: str) -> bytes:
    """A complete HTTP/1.1 answer with a JSON error that closes the connection (written past h11, before a request
    has been parsed)."""
    body = json.dumps({"error": error}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the two bounds it lacks on connections that hold no request.

    uvicorn arms no timer before a connection's first request, nor once a client has begun the next one, so
    a socket that sends nothing, or headers that never end, stays open for ever; and its
    ``limit_concurrency`` counts open connections, so about that many such sockets make every new request,
    ``/v1/health`` included, a plain-text 503. Here a connection is *idle* while no request of it is in
    progress (before the first, between two, while the rest of an already answered body drains), and:

    * an idle connection is closed once it has been idle for ``header_timeout`` seconds, whatever it sent
      meanwhile (a deadline, not a wait between bytes, so a header sent a byte at a time does not renew it);
      if it had sent part of a request it is answered 408 first;
    * when a new connection finds ``limit_concurrency`` connections open, it closes an idle one, those that
      never completed a request first, the longest-waiting first (part of a request sent: answered 503
      first). Idle sockets can therefore never fill the cap; only requests in progress can, and those are
      bounded by the prediction slots and the upload timeout.

    :func:`server_options` makes the subclass with the service's timeout.
    """

    header_timeout: float = DEFAULT_UPLOAD_TIMEOUT

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_since = self.loop.time()
        self._served = False  # a request of this connection has come in
        self._watch_idle()
        self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_idle_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        self._watch_idle()

    def on_response_complete(self) -> None:
        self._idle_since = self.loop.time()  # a new wait for the next request begins
        self._stop_idle_timer()
        super().on_response_complete()  # may start a request sent meanwhile (pipelined)
        self._watch_idle()

    # ------------------------------------------------------------------ internals

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _watch_idle(self) -> None:
        """Arm the idle deadline while idle, drop it while a request is in progress."""
        if self.cycle is not None and not self.cycle.response_complete:
            self._served = True
        if not self._idle():
            self._stop_idle_timer()
        elif self._idle_timer is None and not self.transport.is_closing():
            delay = max(0.0, self._idle_since + self.header_timeout - self.loop.time())
            self._idle_timer = self.loop.call_later(delay, self._idle_too_long)

    def _stop_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_too_long(self) -> None:
        self._idle_timer = None
        if self._idle() and self in self.connections:
            self._close_idle(
                408, "Request Timeout", f"request headers not complete within {self.header_timeout:g} s; closed"
            )

    def _close_idle(self, status: int, reason: str, error: str) -> None:
        """Close this idle connection; answer ``status`` first if part of a request has come."""
        if self.transport.is_closing():
            return
        partial_request = self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        if partial_request and self.conn.our_state is h11.IDLE:
            self.transport.write(_raw_answer(status, reason, error))
        self.transport.close()

    def _make_room(self) -> None:
        """At the connection cap, close an idle connection (not this one) so that this one's request is served."""
        limit = self.limit_concurrency
        if limit is None or len(self.connections) < limit:
            return
        idle = [
            c
            for c in self.connections
            if isinstance(c, GuardedH11Protocol) and c is not self and c._idle() and not c.transport.is_closing()
        ]
        for victim in sorted(idle, key=lambda c: (c._served, c._idle_since))[: len(self.connections) - limit + 1]:
            victim._close_idle(503, "Service Unavailable", "server at its connection limit: idle connection closed")
            self.connections.discard(victim)  # its room is free now, not once the loop has run its close


def default_model_threads() -> int:
    """Concurrent model computations when not set: the number of CPUs, at least 2 and at most 8."""
    return min(8, max(2, os.cpu_count() or 2))


def default_max_concurrency(model_threads: int) -> int:
    """Open connections and requests in progress when not set: 4 per model thread, plus 8."""
    return 4 * model_threads + 8


def create_app(
    model_dir: str | os.PathLike | None = None,
    *,
    predictor: Predictor | None = None,
    runtime: str = "auto",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    model_threads: int | None = None,
    max_concurrency: int | None = None,
    upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT,
    warm_up: bool = True,
) -> FastAPI:
    """The FastAPI application serving ``model_dir`` (or an already loaded ``predictor``).

    ``runtime`` is the :class:`Predictor`'s: ``"auto"`` runs the choice recorded in ``MODEL_DIR/runtimes.json``
    (:mod:`coronet.deploy.runtimes`; ``torch`` without a valid record); ``/v1/health`` says which runs and why.

    ``max_upload_bytes`` caps the uploaded file (the request body may exceed it by the
    multipart framing only); ``max_pixels`` caps an uploaded image's pixel count (None:
    Pillow's ``MAX_IMAGE_PIXELS`` only); ``model_threads`` caps concurrent decoding and inference
    (default: :func:`default_model_threads`); Grad-CAM runs in one separate thread.
    ``max_concurrency`` caps prediction requests in progress (default:
    :func:`default_max_concurrency`); ``upload_timeout`` is the longest wait for the next bytes
    of an upload. ``warm_up`` runs one prediction and one Grad-CAM on a blank film now, so that the
    first request does not pay for building them.
    """
    if predictor is None:
        if model_dir is None:
            raise ValueError("create_app needs a model directory or a predictor")
        predictor = Predictor(model_dir, runtime=runtime)
    if warm_up:
        blank = np.zeros((predictor.input_size, predictor.input_size), np.uint8)
        predictor.heatmaps([blank], [int(np.argmax(predictor.probabilities([blank])[0]))])
    model_threads = model_threads or default_model_threads()
    slots = max_concurrency or default_max_concurrency(model_threads)
    limiter = anyio.CapacityLimiter(model_threads)
    # Grad-CAM is one call at a time (a lock in GradCam): queue for it here, in its own thread,
    # rather than in a model thread, where waiting would hold a slot plain predictions need.
    cam_limiter = anyio.CapacityLimiter(1)
    body_limit = max_upload_bytes + _MULTIPART_SLACK
    info = predictor.info

    counts = {"in_progress": 0, "cancelled": 0}

    @asynccontextmanager
    async def lifespan(app):
        yield
        # uvicorn has waited for the requests in progress (up to its graceful-shutdown timeout) and cancelled the rest
        stopped = counts["in_progress"] + counts["cancelled"]
        if stopped:
            log.error(
                "coronet serve: shutting down; %d request(s) still in progress at the end of the grace period "
                "were cancelled (exit status 0)",
                stopped,
            )
        else:
            log.warning("coronet serve: shutting down; requests in progress were finished (exit status 0)")

    app = FastAPIOffline(
        title="CoroNet",
        version=__version__,
        redoc_url=None,
        lifespan=lifespan,
        description="COVID-19 chest X-ray classification (CoroNet). Research software: "
        "not a medical device, not for diagnosis.",
    )
    _install_error_handlers(app)
    app.add_middleware(_PredictionSlots, limit=slots)
    app.add_middleware(_InFlight, counts=counts)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        if request.url.path == "/" or request.url.path.startswith("/static/"):
            response.headers.setdefault("Content-Security-Policy", _PAGE_CSP)
        return response

    @app.get("/v1/health", summary="Liveness and the loaded model")
    def health() -> dict:
        return {
            "status": "ok",
            "model": info["name"],
            "version": info["version"],
            "runtime": info["runtime"],
            "runtime_choice": info["runtime_choice"],
            "classes": info["classes"],
            "max_upload_bytes": max_upload_bytes,
            "training_data": info["training_data"],
            "adult_false_covid_rate": info["adult_false_covid_rate"],
            "adult_test_films": info["adult_test_films"],
            "worst_false_covid_rate": info["worst_false_covid_rate"],
            "worst_false_covid_source": info["worst_false_covid_source"],
            "source_warning": info["source_warning"],
        }

    @app.get("/v1/model", summary="The model card (model.json)")
    def model_card() -> dict:
        return predictor.card

    @app.post("/v1/predict", summary="Classify one chest X-ray", openapi_extra=_PREDICT_OPENAPI)
    async def predict(request: Request, cam: bool = False, image: bool = False) -> dict:
        filename, data, fields = await _read_upload(request, body_limit, max_upload_bytes, upload_timeout)
        cam = cam or fields.get("cam", "").strip().lower() in _TRUE
        image = image or fields.get("image", "").strip().lower() in _TRUE
        result, film, index = await anyio.to_thread.run_sync(
            partial(_analyse, predictor, data, filename, preview=image, max_pixels=max_pixels), limiter=limiter
        )
        if cam:
            result.update(
                await anyio.to_thread.run_sync(partial(_grad_cam, predictor, film, index), limiter=cam_limiter)
            )
        return result

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.predictor = predictor
    return app


# ------------------------------------------------------------------------ upload


async def _read_upload(
    request: Request, body_limit: int, file_limit: int, timeout: float = DEFAULT_UPLOAD_TIMEOUT
) -> tuple[str, bytes, dict]:
    """(file name, file bytes, other form fields) of a multipart upload, within the limits; else ApiError."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, "send the image as multipart/form-data, in the field 'file'")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise ApiError(413, f"upload too large: {int(declared)} bytes declared, limit {file_limit} bytes")
    parser = MultiPartParser(
        request.headers, _capped(request.stream(), body_limit, timeout), max_files=1, max_fields=4, max_part_size=1024
    )
    try:
        form = await parser.parse()
    except _UploadTooLarge:
        raise ApiError(413, f"upload too large: over {file_limit} bytes") from None
    except _UploadStalled as stalled:
        raise ApiError(408, f"upload stalled: {stalled}", headers={"Connection": "close"}) from None
    except MultiPartException as error:
        if "header size" in str(error.__cause__).lower():  # python-multipart's MultipartParseError
            raise ApiError(
                400,
                f"malformed multipart body: a part's header line is over the limit of {MAX_PART_HEADER_BYTES} bytes "
                "(a file name that long? send a shorter one)",
            ) from None
        raise ApiError(400, f"malformed multipart body: {error.message}") from None
    except ClientDisconnect:
        raise ApiError(400, "client disconnected during the upload") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(422, "no file: send the image as multipart field 'file'")
        data = await upload.read()
        if len(data) > file_limit:
            raise ApiError(413, f"upload too large: {len(data)} bytes, limit {file_limit} bytes")
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        return _safe_name(upload.filename), data, fields
    finally:
        await form.close()


async def _capped(stream, limit: int, timeout: float = DEFAULT_UPLOAD_TIMEOUT):
    """``stream``'s chunks, raising once more than ``limit`` bytes have come, or when the client stalls:
    no chunk for ``timeout`` seconds, or the whole body not in after ``10 * timeout``."""
    received = 0
    deadline = anyio.current_time() + 10 * timeout
    chunks = stream.__aiter__()
    while True:
        wait = min(timeout, deadline - anyio.current_time())
        try:
            with anyio.fail_after(max(wait, 0)):
                chunk = await chunks.__anext__()
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise _UploadStalled(
                f"no data for {timeout:g} s" if wait == timeout else f"not complete after {10 * timeout:g} s"
            ) from None
        received += len(chunk)
        if received > limit:
            raise _UploadTooLarge()
        yield chunk


def _safe_name(filename: str | None) -> str:
    """The client's file name as a label only: base name, printable, at most 120 characters."""
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:120]
    return name or "upload"


# ----------------------------------------------------------------------- analyse


def _analyse(
    predictor: Predictor, data: bytes, name: str, *, preview: bool, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[dict, np.ndarray, int]:
    """The answer for one uploaded file, its decoded film and the predicted class's index (blocking: run in a
    worker thread)."""
    kind = sniff_format(data)
    dicom_by_name = kind is None and name.lower().endswith((".dcm", ".dicom"))
    if not data:
        raise ApiError(400, f"{name}: empty file (0 bytes)")
    if kind not in ACCEPTED_FORMATS and not dicom_by_name:
        found = f"{kind.upper()} image" if kind else "unrecognised content"
        raise ApiError(415, f"{name}: not a PNG, JPEG or DICOM image ({found}; the format is read from the bytes)")
    try:
        film = read_image(data, name=name, max_pixels=max_pixels)
    except ImageReadError as error:
        raise ApiError(422, f"{name}: {error.problem}") from None
    probabilities = predictor.probabilities([film])[0]
    index = int(np.argmax(probabilities))
    info = predictor.info
    result = {
        "file": name,
        "predicted_class": predictor.classes[index],
        "probabilities": {c: float(p) for c, p in zip(predictor.classes, probabilities)},
        "model": {key: info[key] for key in ("name", "version", "weights_sha256", "runtime")},
        "image_size": {"width": int(film.shape[1]), "height": int(film.shape[0])},
        "notice": predictor.card.get("notice") or _NOTICE,
    }
    if preview:
        result["image"] = _b64_png(fit(film, _PREVIEW_SIDE))
    return result, film, index


def _grad_cam(predictor: Predictor, film: np.ndarray, index: int) -> dict:
    """The Grad-CAM overlay of class ``index`` for a decoded film (blocking: run in a worker thread)."""
    heatmap = predictor.heatmaps([film], [index])[0]
    return {"cam": _b64_png(overlay(film, heatmap, max_side=_PREVIEW_SIDE)), "cam_class": predictor.classes[index]}


def _b64_png(image: np.ndarray) -> str:
    return base64.b64encode(png_bytes(image)).decode("ascii")


# ------------------------------------------------------------------------ errors


def _install_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": message}`` with its status; unexpected ones logged, answered 500."""

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return JSONResponse(
            {"error": str(error.detail)}, status_code=error.status_code, headers=getattr(error, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in error.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": f"internal error ({type(error).__name__})"}, status_code=500)


_PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "PNG, JPEG or DICOM chest X-ray"},
                        "cam": {"type": "boolean", "description": "also return the Grad-CAM overlay (PNG, base64)"},
                        "image": {"type": "boolean", "description": "also return the film as read (PNG, base64)"},
                    },
                }
            }
        },
    },
    "responses": {
        "200": {"description": "predicted class, probability per class, model name and version"},
        "400": {"description": "empty file or malformed multipart body"},
        "413": {"description": "upload over the size limit"},
        "415": {"description": "not multipart, or not a PNG, JPEG or DICOM image"},
        "422": {"description": "no 'file' field, or an image that cannot be read (truncated, over the pixel cap...)"},
        "408": {"description": "the upload stalled (no bytes for the upload timeout)"},
        "503": {"description": "server busy: `coronet serve --max-concurrency` predictions in progress"},
    },
}


# ------------------------------------------------------------------------ server


def server_options(max_concurrency: int, upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT) -> dict:
    """The ``uvicorn.Config`` options :func:`serve` runs with (the tests run their servers with them too).

    Open connections are capped at four times ``max_concurrency`` plus 32 (``limit_concurrency``: beyond it
    uvicorn answers a plain-text 503), and :class:`GuardedH11Protocol` gives a connection ``upload_timeout``
    seconds to complete a request's headers and closes idle connections to make room at the cap; a
    keep-alive connection with nothing more to send is closed after 5 s; on shutdown the requests in
    progress get :data:`GRACEFUL_SHUTDOWN_SECONDS`.
    """
    protocol = type("GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": upload_timeout})
    return {
        "http": protocol,
        "limit_concurrency": 4 * max_concurrency + 32,
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
    log_level: str = "info",
    upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT,
) -> None:
    """Load the model and serve it with uvicorn until SIGINT or SIGTERM.

    ``max_concurrency`` (default: :func:`default_max_concurrency`) caps prediction requests in
    progress (a JSON 503 beyond it); the connections are bounded as :func:`server_options` says, so a
    flood of connections queues neither without bound nor with its uploads in memory, and idle ones
    cannot lock anyone out. On SIGTERM or SIGINT the server stops accepting, the requests in progress
    are finished (those still running after :data:`GRACEFUL_SHUTDOWN_SECONDS` are cancelled), one line
    is logged, and this function returns, so the process exits with status 0 (uvicorn would re-raise
    the signal and die by it, status -15 / 143).
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
        upload_timeout=upload_timeout,
    )
    choice = app.state.predictor.runtime_choice
    if choice["record"] or (Path(app.state.predictor.model_dir) / "runtimes.json").exists():
        log.warning("coronet serve: runtime %s (%s)", app.state.predictor.runtime, choice["reason"])
    warning = training_facts(read_card(model_dir)[0])["source_warning"]
    if warning:
        log.warning("coronet serve: warning: %s", warning)
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, **server_options(slots, upload_timeout))
    )
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
