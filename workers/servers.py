"""What a client can hold of boxoffice's HTTP servers (webhook receiver, codec server): a request must
arrive whole within READ_SECONDS, heads are capped at MAX_HEADER_BYTES, bodies by each app, JSON
nesting at MAX_JSON_DEPTH; uvicorn answers 503 past MAX_CONNECTIONS; its error log goes through our
JSON logging; no slash redirect (Starlette builds its Location from the request's Host header)."""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

import h11
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from uvicorn.protocols.http.h11_impl import H11Protocol

# A request's head and body, from its first byte (from the connection, for the first request).
# ATM's events are KBs and codec bodies at most 4 MiB (3.4 Mbit/s for the largest): ample.
READ_SECONDS = 10.0
KEEP_ALIVE_SECONDS = 5
MAX_HEADER_BYTES = 16 * 1024
MAX_CONNECTIONS = 256
MAX_JSON_DEPTH = 32

_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")
_TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: 29\r\n"
    b'connection: close\r\n\r\n{"error": "request too slow"}'
)


def read_deadline_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol, where a request not whole (head and body) `seconds` after its first
    byte is answered 408 (if nothing was answered yet) and its connection closed. uvicorn has no such
    timeout, and an ASGI middleware would not see a request whose head never ends."""

    class ReadDeadlineProtocol(H11Protocol):
        _deadline: Any = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def data_received(self, data: bytes) -> None:
            if self._deadline is None and self.conn.their_state is h11.IDLE:  # the next request starts
                self._deadline = self.loop.call_later(seconds, self._too_slow)
            super().data_received(data)
            if self._deadline is not None and self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                self._deadline.cancel()
                self._deadline = None

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            super().connection_lost(exc)

        def _too_slow(self) -> None:
            self._deadline = None
            if self.transport.is_closing() or self.conn.their_state not in (h11.IDLE, h11.SEND_BODY):
                return
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(_TIMED_OUT)
            self.transport.close()

    return ReadDeadlineProtocol


# uvicorn's loggers without handlers of their own: their lines go through ours (JSON in production),
# even after another server in the process installed uvicorn's plain-text ones.
LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {name: {"handlers": [], "propagate": True} for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
}


def server_config(app: Any, read_seconds: float = READ_SECONDS, **options: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        http=read_deadline_protocol(read_seconds),
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=MAX_CONNECTIONS,
        log_config=LOG_CONFIG,
        log_level="warning",
        **options,
    )


def without_slash_redirect(app: Starlette) -> Starlette:
    """`/path/` is 404, not a redirect whose Location Starlette builds from the Host header."""
    app.router.redirect_slashes = False
    return app


async def capped_body(request: Request, max_bytes: int) -> bytes | None:
    """The body, or None once it grows past `max_bytes` (a chunked upload has no length to check)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            return None
    return bytes(body)


def nested_deeper(raw: bytes, max_depth: int) -> bool:
    """Whether the brackets outside strings nest deeper than `max_depth` (stops at the first that does)."""
    brackets = _NOT_BRACKETS.sub(b"", _STRINGS.sub(b"", raw))
    return any(depth > max_depth for depth in accumulate(1 if b in b"[{" else -1 for b in brackets))


def loads_bounded(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads, refusing nesting deeper than `max_depth` (ValueError) before the parser recurses."""
    if nested_deeper(raw, max_depth):
        raise ValueError(f"JSON nested deeper than {max_depth}")
    return json.loads(raw)
