"""uvicorn's h11 protocol with the bounds it lacks: idle connections, the connection cap, uploads at shutdown."""

from __future__ import annotations

import asyncio
import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import DEFAULT_UPLOAD_TIMEOUT

__all__ = ["SHUTTING_DOWN", "GuardedH11Protocol"]

#: Set to True in the ASGI scope of a request whose body is still arriving when the server begins to shut down:
#: the upload reader then answers 503 at once (:mod:`.uploads`) instead of waiting for the rest of the body, which
#: would hold the shutdown and end, at the grace period's end, in a cancelled task and uvicorn's plain-text 500.
SHUTTING_DOWN = "coronet.shutting_down"


def _raw_answer(status: int, reason: str, error: str) -> bytes:
    """A complete HTTP/1.1 answer with a JSON error that closes the connection (written past h11, before a request
    has been parsed)."""
    body = json.dumps({"error": error}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with the two bounds it lacks on connections that hold no request, and a word to the
    uploads still arriving when the server shuts down.

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
      bounded by the upload and prediction slots and the upload timeout;
    * on shutdown, a request whose body is still arriving is marked (:data:`SHUTTING_DOWN` in its scope) and its
      reader woken, so that it is answered at once rather than waited for.

    :func:`coronet.deploy.serve.server_options` makes the subclass with the service's timeout.
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

    def shutdown(self) -> None:
        super().shutdown()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and self.conn.their_state is h11.SEND_BODY:
            cycle.scope[SHUTTING_DOWN] = True  # type: ignore[literal-required]
            cycle.message_event.set()  # a reader waiting for more of the body gets an empty part, and looks

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
