"""Counts every HTTP request once, whatever answered it: the body limit, authentication,
validation, a domain error, a backend outage or the route itself (ASGI middleware,
outermost, so nothing can refuse a request before it is seen). The answers of the
model-backed endpoints also get a `Server-Timing` header: where the request's time went
(`serve_app.stage_timing`)."""

from __future__ import annotations

import time

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve_app import stage_timing
from serve_app.metrics import ServiceMetrics
from serve_app.web.errors import ERROR_CODE_STATE

UNMATCHED = "unmatched"


def endpoint_name(routes: list[BaseRoute], scope: Scope) -> str:
    """The route a request is for (its function name), known before any middleware refuses it."""
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "name", UNMATCHED))
    return UNMATCHED


class RequestMetrics:
    """ASGI middleware: endpoint, status, error code and latency of every request."""

    # Probes and docs are not API traffic.
    _SKIPPED = frozenset({"health", "openapi", "swagger_ui_html", "swagger_ui_redirect", "redoc_html"})
    _TIMED = frozenset({"enroll_identity", "verify", "search", "ingest"})

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_name(self.routes, scope)
        if endpoint in self._SKIPPED:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler
        # Latency ends when the answer starts (its body is a small JSON document): the
        # same figure for the histograms and the Server-Timing header's total.
        elapsed: float | None = None
        timed = endpoint in self._TIMED

        with stage_timing.request_timings() as timings:
            async def observed(message: Message) -> None:
                nonlocal status, elapsed
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    elapsed = time.perf_counter() - started
                    if timed:
                        header = timings.header(elapsed).encode()
                        message = {**message, "headers": [*message.get("headers", []), (b"server-timing", header)]}
                await send(message)

            try:
                await self.app(scope, receive, observed)
            finally:
                code = scope.get("state", {}).get(ERROR_CODE_STATE)
                seconds = elapsed if elapsed is not None else time.perf_counter() - started
                self.metrics.request_done(endpoint, status, code, seconds)
