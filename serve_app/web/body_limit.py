"""Refuse request bodies over a size limit before they are parsed (ASGI middleware).

Checked twice: the declared Content-Length up front, and the bytes actually received
(a chunked or lying client), so an oversized body is never buffered whole by the parser.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.errors import DomainError
from serve_app.web.errors import refusal


class RequestTooLarge(DomainError):
    def __init__(self, max_bytes: int) -> None:
        super().__init__("request_too_large", 413, max_bytes=max_bytes)


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await refusal(scope, RequestTooLarge(self.max_bytes))(scope, receive, send)
            return
        received = 0

        async def counted() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the app's body parsing: the DomainError handler answers 413.
                    raise RequestTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted, send)
