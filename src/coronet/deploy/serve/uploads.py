"""Reading an upload: the multipart body as a stream, within its size, time and shutdown limits."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import anyio
from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect

from .errors import ApiError
from .limits import DEFAULT_UPLOAD_TIMEOUT
from .protocol import SHUTTING_DOWN

__all__ = ["MAX_PART_HEADER_BYTES", "Upload", "read_upload", "route_parser_log"]

#: python-multipart's longest header line in a part (Content-Disposition, with the file name); None: no limit
#: (older releases)
MAX_PART_HEADER_BYTES: int | None
try:
    from python_multipart.multipart import DEFAULT_MAX_HEADER_SIZE as MAX_PART_HEADER_BYTES
except ImportError:
    MAX_PART_HEADER_BYTES = None
_MULTIPART_SLACK = 64 * 1024  # boundaries, part headers and small fields around the file
_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class Upload:
    """One uploaded file: its name (a label only, see :func:`_safe_name`), its bytes and the other form fields."""

    name: str
    data: bytes
    fields: dict[str, str] = field(default_factory=dict)

    def asks_for(self, option: str) -> bool:
        """Whether the form field ``option`` says yes (``cam=true`` as a form field, not a query parameter)."""
        return self.fields.get(option, "").strip().lower() in _TRUE


class _UploadTooLarge(Exception):
    pass


class _UploadStalled(Exception):
    pass


class _ShuttingDown(Exception):
    pass


async def read_upload(request: Request, *, file_limit: int, timeout: float = DEFAULT_UPLOAD_TIMEOUT) -> Upload:
    """The multipart upload of ``request``, within the limits; else :class:`ApiError` with the status that says why.

    ``file_limit`` caps the file (the body may exceed it by the multipart framing only); ``timeout`` is the
    longest wait for the next bytes, and the whole body gets ten times that.
    """
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(415, "send the image as multipart/form-data, in the field 'file'")
    body_limit = file_limit + _MULTIPART_SLACK
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > body_limit:
        raise ApiError(413, f"upload too large: {int(declared)} bytes declared, limit {file_limit} bytes")
    parser = MultiPartParser(
        request.headers, _body(request, body_limit, timeout), max_files=1, max_fields=4, max_part_size=1024
    )
    try:
        form = await parser.parse()
    except _UploadTooLarge:
        raise ApiError(413, f"upload too large: over {file_limit} bytes") from None
    except _UploadStalled as stalled:
        raise ApiError(408, f"upload stalled: {stalled}", headers={"Connection": "close"}) from None
    except _ShuttingDown:
        raise ApiError(
            503, "server shutting down: the upload was not complete; send it again", headers={"Connection": "close"}
        ) from None
    except MultiPartException as error:
        raise ApiError(400, _malformed(error)) from None
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
        return Upload(_safe_name(upload.filename), data, fields)
    finally:
        await form.close()


def _malformed(error: MultiPartException) -> str:
    if "header size" in str(error.__cause__).lower():  # python-multipart's MultipartParseError
        return (
            f"malformed multipart body: a part's header line is over the limit of {MAX_PART_HEADER_BYTES} bytes "
            "(a file name that long? send a shorter one)"
        )
    return f"malformed multipart body: {error.message}"


async def _body(request: Request, limit: int, timeout: float) -> AsyncGenerator[bytes, None]:
    """The body's chunks as they arrive, raising once more than ``limit`` bytes have come, when the client stalls
    (no chunk for ``timeout`` seconds, or the whole body not in after ``10 * timeout``), or when the server begins
    to shut down (the protocol marks the scope and wakes this reader: :data:`SHUTTING_DOWN`).

    Read from ``request.receive`` itself, not ``request.stream()``, which skips the empty message the wake-up is.
    """
    received = 0
    deadline = anyio.current_time() + 10 * timeout
    while True:
        wait = min(timeout, deadline - anyio.current_time())
        try:
            with anyio.fail_after(max(wait, 0)):
                message = await request.receive()
        except TimeoutError:
            raise _UploadStalled(
                f"no data for {timeout:g} s" if wait == timeout else f"not complete after {10 * timeout:g} s"
            ) from None
        if message["type"] == "http.disconnect":
            raise ClientDisconnect()
        if request.scope.get(SHUTTING_DOWN):
            raise _ShuttingDown()
        chunk = message.get("body", b"")
        received += len(chunk)
        if received > limit:
            raise _UploadTooLarge()
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


def _safe_name(filename: str | None) -> str:
    """The client's file name as a label only: base name, printable, at most 120 characters."""
    name = (filename or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())[:120]
    return name or "upload"


# ------------------------------------------------------------------------ the parser's log


class _ParserLog(logging.Handler):
    """python-multipart's records, logged again on the service's logger: prefixed, one line each, no traceback."""

    def __init__(self, target: logging.Logger):
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = " ".join(record.getMessage().split())
            self.target.log(record.levelno, "coronet serve: multipart parser: %s", message)
        except Exception:  # logging's rule: a handler never raises
            self.handleError(record)


def route_parser_log(target: logging.Logger) -> None:
    """Send python-multipart's log through ``target`` (once per process, however many apps are made).

    Its warnings repeat the malformed body a client was just answered 400 for; with no handler of their own they
    reached the terminal bare, through logging's last resort, without the service's prefix.
    """
    parser_log = logging.getLogger("python_multipart")
    if not any(isinstance(handler, _ParserLog) for handler in parser_log.handlers):
        parser_log.addHandler(_ParserLog(target))
    parser_log.propagate = False
