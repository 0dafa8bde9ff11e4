"""Refuse request bodies over a size limit without ever holding them (ASGI middleware).

Checked twice: the declared Content-Length up front, and the bytes actually received
(a chunked or lying client), so an oversized body is never buffered whole by the parser.
The refused body is read and discarded (up to a bound) before the 413 is sent: a server
that answers while the client is still sending resets the connection, and the client
sees a broken pipe instead of a readable `request_too_large`.
"""

from __future__ import annotations

import time
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app.errors import DomainError
from serve_app.web.errors import refusal

# How much of a refused body is drained at most, as a multiple of the limit, and for how
# long: past either the connection is closed (a client streaming forever gets a reset).
_DRAIN_FACTOR = 4
_DRAIN_SECONDS = 30.0


class RequestTooLarge(DomainError):
    def __init__(self, max_bytes: int) -> None:
        super().__init__("request_too_large", 413, max_bytes=max_bytes)


async def _drain(receive: Receive, budget: int) -> bool:
    """Discard the rest of the body; True if it ended within the budget."""
    deadline = time.monotonic() + _DRAIN_SECONDS
    while budget >= 0 and time.monotonic() < deadline:
        message = await receive()
        if message["type"] != "http.request":
            return False  # the client went away
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
    return False


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        drained = await _drain(receive, _DRAIN_FACTOR * self.max_bytes)
        response = refusal(scope, RequestTooLarge(self.max_bytes))
        if not drained:
            response.headers["Connection"] = "close"
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        received = 0
        pending_drain = False

        async def counted() -> Message:
            nonlocal received, pending_drain
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes and message.get("more_body", False):
                    pending_drain = True
                if received > self.max_bytes:
                    # Stop the parser: the route never sees a partial body. FastAPI's
                    # DomainError handler answers 413.
                    raise RequestTooLarge(self.max_bytes)
            return message

        async def answer(message: Message) -> None:
            nonlocal pending_drain
            if pending_drain and message["type"] == "http.response.start":
                # The rest of the body is still on the wire: read it before answering.
                pending_drain = False
                if not await _drain(receive, _DRAIN_FACTOR * self.max_bytes):
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted, answer)
