"""The web service: a JSON API over one loaded model, and a page for people at ``/``.

::

    POST /v1/predict   multipart field ``file`` (PNG, JPEG or DICOM); ``cam=true`` (query or form field)
                       adds the Grad-CAM overlay, ``image=true`` the film as the model read it (base64 PNGs)
    GET  /v1/health    {"status": "ok", model name and version, the runtime and why it runs, the upload limit,
                       uploads and predictions in progress with their limits}
    GET  /v1/model     the model card
    GET  /docs         OpenAPI documentation (``/openapi.json``), Swagger UI served from this server
                       (fastapi-offline: no CDN, so it works offline)
    GET  /             the page (``coronet/deploy/static``)

One module per job:

* :mod:`.app` -- :func:`create_app`: the routes (model and health, predict, page), middleware, lifespan;
* :mod:`.uploads` -- reading the multipart body within its size, time and shutdown limits;
* :mod:`.analysis` -- the model work for one upload: decode, classify, Grad-CAM;
* :mod:`.limits` -- the defaults, and the slots counting uploads and predictions in progress;
* :mod:`.protocol` -- :class:`GuardedH11Protocol`, uvicorn's h11 protocol with the bounds it lacks;
* :mod:`.errors` -- refusals as JSON;
* :mod:`.run` -- :func:`serve` and :func:`server_options`: uvicorn's options, start and clean stop.

The model is loaded once, when the app is created. Model work (decoding,
inference, Grad-CAM) is blocking, so it runs in worker threads while the event
loop keeps accepting requests: decoding and inference at most ``model_threads``
at a time, Grad-CAM in one more thread of its own (it is serialised anyway, see
:class:`coronet.deploy.explain.GradCam`; waiting for it never holds a model thread, so
heat maps cannot starve plain predictions). :class:`coronet.deploy.predict.Predictor`
is safe to share between them.

Work in progress is bounded twice, and neither bound is a queue: beyond it the
answer is a JSON 503 with ``Retry-After`` at once. Uploads being received, and
their films decoded, are capped by ``max_uploads``; predictions, from decoded
film to answer, by ``max_concurrency``. A slow upload therefore holds an upload
slot only, never the model. ``/v1/health``, the model card and the page are
not counted and keep answering.

Connections are bounded too (:func:`server_options`, used by :func:`serve`):
uvicorn caps open connections at ``max_uploads + max_concurrency + 32`` (its
503 beyond that is plain text), and :class:`GuardedH11Protocol` keeps sockets
that hold no request from using that room up: a connection must complete a
request's headers within ``upload_timeout`` of opening (or of its previous
answer), else it is closed (answered 408 first if it had sent part of them), and
when the cap is reached a new connection closes the longest-waiting idle one,
so a flood of silent sockets or unfinished headers cannot lock ``/v1/health``
out. On SIGTERM or SIGINT the server stops accepting, uploads still arriving
are answered with a JSON 503 (``server shutting down``), the predictions in
progress are finished (for up to 5 s; any still running then get a JSON 503),
and the process exits with status 0.

Untrusted input is bounded before it costs anything:

* the request's headers must be complete within ``upload_timeout`` seconds of
  the connection opening, else 408 and the connection is closed;
* the body is read as a stream and refused with 413 once it passes
  ``max_upload_bytes`` (a declared ``Content-Length`` over the cap is refused
  before any of the body is read); an upload that stalls -- no bytes for
  ``upload_timeout`` seconds, or not finished within ten times that -- is
  answered 408 and its connection closed;
* one file part, few and short other fields; a part's header line at most
  :data:`MAX_PART_HEADER_BYTES` (the multipart parser's limit: a file name of
  about 4,000 characters), refused with a 400 that says so; the parser's own
  log lines go through the service's logger (``coronet serve: multipart
  parser: ...``), one line each;
* the format is sniffed from the bytes (PNG, JPEG or DICOM; the file name
  and the part's Content-Type are ignored): bytes that are no image get 415
  whatever their name, a PNG whose chunk checksums fail is refused (422);
* the pixel count is capped by the image reader, checked from the header
  before decoding: ``max_pixels`` (default
  :data:`coronet.data.imageio.DEFAULT_MAX_PIXELS`, 40 million, the same as
  ``coronet predict``'s; a 16-bit film takes several bytes per pixel while it
  is decoded), and never more than Pillow's ``MAX_IMAGE_PIXELS``.

Every refusal is a 4xx with a JSON body ``{"error": "..."}`` that names the
problem; anything unexpected is logged and answered with a 500 in the same
shape, and the server carries on.
"""

from .app import create_app
from .limits import (
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_MAX_UPLOADS,
    DEFAULT_UPLOAD_TIMEOUT,
    GRACEFUL_SHUTDOWN_SECONDS,
    default_max_concurrency,
    default_model_threads,
)
from .protocol import GuardedH11Protocol
from .run import serve, server_options
from .uploads import MAX_PART_HEADER_BYTES

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_MAX_UPLOADS",
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
