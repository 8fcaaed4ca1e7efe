"""The FastAPI application over one loaded model: its routes, one router per concern, its middleware and lifespan."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.datastructures import MutableHeaders

from ... import __version__
from ..predict import Predictor
from .analysis import classify, decode, grad_cam
from .errors import install_error_handlers
from .limits import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MAX_UPLOADS,
    DEFAULT_UPLOAD_TIMEOUT,
    Slots,
    default_max_concurrency,
    default_model_threads,
)
from .uploads import read_upload, route_parser_log

__all__ = ["RequestsInFlight", "SecurityHeaders", "Service", "create_app"]

log = logging.getLogger("coronet.serve")

STATIC = Path(__file__).resolve().parent.parent / "static"  # deploy/static: the package data pyproject names

#: The page's Content-Security-Policy: its own files only, images also from data:/blob: URLs.
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass
class Service:
    """What the routes share: the model, the limits, and the counts of work in progress."""

    predictor: Predictor
    max_upload_bytes: int
    max_pixels: int | None
    upload_timeout: float
    uploads: Slots  # bodies being received, and decoded once in
    predictions: Slots  # decoded films being predicted, up to their answer
    model_threads: anyio.CapacityLimiter  # decoding and inference
    # Grad-CAM is one call at a time (a lock in GradCam): queue for it here, in its own thread,
    # rather than in a model thread, where waiting would hold a thread plain predictions need.
    grad_cam: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(1))
    requests: dict = field(default_factory=lambda: {"in_progress": 0, "cancelled": 0})


def create_app(
    model_dir: str | os.PathLike | None = None,
    *,
    predictor: Predictor | None = None,
    runtime: str = "auto",
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    model_threads: int | None = None,
    max_concurrency: int | None = None,
    max_uploads: int = DEFAULT_MAX_UPLOADS,
    upload_timeout: float = DEFAULT_UPLOAD_TIMEOUT,
    warm_up: bool = True,
) -> FastAPI:
    """The FastAPI application serving ``model_dir`` (or an already loaded ``predictor``).

    ``runtime`` is the :class:`Predictor`'s: ``"auto"`` runs the choice recorded in ``MODEL_DIR/runtimes.json``
    (:mod:`coronet.deploy.runtimes`; ``torch`` without a valid record); ``/v1/health`` says which runs and why.

    ``max_upload_bytes`` caps the uploaded file (the request body may exceed it by the multipart framing
    only); ``max_pixels`` caps an uploaded image's pixel count (None: Pillow's ``MAX_IMAGE_PIXELS`` only);
    ``model_threads`` caps concurrent decoding and inference (default: :func:`default_model_threads`);
    Grad-CAM runs in one separate thread. ``max_uploads`` caps the uploads being received (and decoded);
    ``max_concurrency`` the predictions in progress, from decoded film to answer (default:
    :func:`default_max_concurrency`); a request past either gets a JSON 503 at once. ``upload_timeout`` is the
    longest wait for the next bytes of an upload. ``warm_up`` runs one prediction and one Grad-CAM on a
    blank film now, so that the first request does not pay for building them.
    """
    predictor = _loaded(model_dir, predictor, runtime, warm_up)
    threads = model_threads or default_model_threads()
    service = Service(
        predictor,
        max_upload_bytes,
        max_pixels,
        upload_timeout,
        uploads=Slots(max_uploads, "uploads being received"),
        predictions=Slots(max_concurrency or default_max_concurrency(threads), "predictions in progress"),
        model_threads=anyio.CapacityLimiter(threads),
    )
    app = FastAPIOffline(
        title="CoroNet",
        version=__version__,
        redoc_url=None,
        lifespan=_log_the_shutdown(service.requests),
        description="COVID-19 chest X-ray classification (CoroNet). Research software: "
        "not a medical device, not for diagnosis.",
    )
    install_error_handlers(app)
    app.add_middleware(RequestsInFlight, counts=service.requests)
    app.add_middleware(SecurityHeaders)
    app.include_router(_model_routes(service))
    app.include_router(_predict_routes(service))
    app.include_router(_page_routes())
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.predictor = predictor
    app.state.service = service
    route_parser_log(log)
    return app


def _loaded(model_dir, predictor: Predictor | None, runtime: str, warm_up: bool) -> Predictor:
    if predictor is None:
        if model_dir is None:
            raise ValueError("create_app needs a model directory or a predictor")
        predictor = Predictor(model_dir, runtime=runtime)
    if warm_up:
        blank = np.zeros((predictor.input_size, predictor.input_size), np.uint8)
        predictor.heatmaps([blank], [int(np.argmax(predictor.probabilities([blank])[0]))])
    return predictor


# ------------------------------------------------------------------------ routes


def _model_routes(service: Service) -> APIRouter:
    """Health and the model card: never counted against the slots, so they answer however busy the service is."""
    router = APIRouter()
    info = service.predictor.info

    @router.get("/v1/health", summary="Liveness, the loaded model and the work in progress")
    def health() -> dict:
        return {
            "status": "ok",
            "model": info["name"],
            "version": info["version"],
            "runtime": info["runtime"],
            "runtime_choice": info["runtime_choice"],
            "classes": info["classes"],
            "max_upload_bytes": service.max_upload_bytes,
            "uploads_in_progress": service.uploads.in_use,
            "max_uploads": service.uploads.limit,
            "predictions_in_progress": service.predictions.in_use,
            "max_concurrency": service.predictions.limit,
            "training_data": info["training_data"],
            "adult_false_covid_rate": info["adult_false_covid_rate"],
            "adult_test_films": info["adult_test_films"],
            "worst_false_covid_rate": info["worst_false_covid_rate"],
            "worst_false_covid_source": info["worst_false_covid_source"],
            "source_warning": info["source_warning"],
        }

    @router.get("/v1/model", summary="The model card (model.json)")
    def model_card() -> dict:
        return service.predictor.card

    return router


def _predict_routes(service: Service) -> APIRouter:
    """``POST /v1/predict``: an upload slot while the body arrives and the film is decoded, then a prediction slot
    from decoded film to answer. A slow client holds the first only, so it never keeps the model from others."""
    router = APIRouter()
    in_model_thread = partial(anyio.to_thread.run_sync, limiter=service.model_threads)

    @router.post("/v1/predict", summary="Classify one chest X-ray", openapi_extra=_PREDICT_OPENAPI)
    async def predict(request: Request, cam: bool = False, image: bool = False) -> dict:
        with service.uploads.hold():
            upload = await read_upload(request, file_limit=service.max_upload_bytes, timeout=service.upload_timeout)
            service.predictions.refuse_if_full()  # now, rather than after a decoding that would be thrown away
            film = await in_model_thread(partial(decode, upload.data, upload.name, service.max_pixels))
        with service.predictions.hold():
            preview = image or upload.asks_for("image")
            result, index = await in_model_thread(
                partial(classify, service.predictor, film, upload.name, preview=preview)
            )
            if cam or upload.asks_for("cam"):
                result.update(
                    await anyio.to_thread.run_sync(
                        partial(grad_cam, service.predictor, film, index), limiter=service.grad_cam
                    )
                )
        return result

    return router


def _page_routes() -> APIRouter:
    router = APIRouter()

    @router.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return router


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
        "415": {"description": "not multipart, or not a PNG, JPEG or DICOM image (whatever the file's name)"},
        "422": {
            "description": "no 'file' field, or an image that cannot be read (truncated, corrupt, over the pixel cap)"
        },
        "408": {"description": "the upload stalled (no bytes for the upload timeout)"},
        "503": {
            "description": "server busy: `coronet serve --max-uploads` uploads being received or `--max-concurrency` "
            "predictions in progress (Retry-After); or shutting down while the upload was still arriving"
        },
    },
}


# ------------------------------------------------------------------------ middleware and lifespan


class SecurityHeaders:
    """ASGI middleware: ``X-Content-Type-Options: nosniff`` on every answer, the page's Content-Security-Policy on
    the page and its files.

    Plain ASGI on purpose: Starlette's ``@app.middleware("http")`` runs the rest of the app in a task of its own,
    and a request cancelled at shutdown came out of it as chained tracebacks in the log.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        page = scope["path"] == "/" or scope["path"].startswith("/static/")

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                if page:
                    headers.setdefault("Content-Security-Policy", _PAGE_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestsInFlight:
    """ASGI middleware: counts the HTTP requests in progress, and those cancelled, for the shutdown's log line.

    A request still running when the grace period ends is cancelled by uvicorn, which would log the cancellation
    as a traceback and answer a plain-text 500: here it is answered with a JSON 503, and the cancellation ends
    with the request (the task is uvicorn's last word to it; nothing waits for it to go on).
    """

    def __init__(self, app, counts: dict):
        self.app, self.counts = app, counts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def send_and_note(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        self.counts["in_progress"] += 1
        try:
            await self.app(scope, receive, send_and_note)
        except asyncio.CancelledError:
            self.counts["cancelled"] += 1
            if not started:
                error = {"error": "server shutting down: the request did not finish within the grace period"}
                await JSONResponse(error, status_code=503, headers={"Connection": "close"})(scope, receive, send)
        finally:
            self.counts["in_progress"] -= 1


def _log_the_shutdown(counts: dict):
    """The app's lifespan: nothing at start; at the end, one line saying whether requests were cut short."""

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

    return lifespan
