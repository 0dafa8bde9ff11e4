"""Every failure the HTTP edge can meet, turned into `{"detail": code}` with a 4xx/5xx.

No handler here ever returns a traceback or echoes the (possibly huge, possibly
biometric) request input back to the client. Each answer also leaves its code in the
request's state, where the metrics middleware counts it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayError, RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from serve_app.errors import DomainError

logger = logging.getLogger("ray.serve")

ERROR_CODE_STATE = "error_code"

# Validation failures on these fields get their own code; anything else is invalid_request.
_FIELD_CODES = {
    "tenant_id": "invalid_tenant_id",
    "identity_id": "invalid_identity_id",
    "hi_threshold": "invalid_threshold",
    "top_k": "invalid_top_k",
    "images_b64": "invalid_images",
    "image_b64": "invalid_image",
    "site": "invalid_site",
    "url": "invalid_url",
    "metadata": "invalid_metadata",
}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
# What an error answer may show of client input: short, printable, no markup.
_EXCERPT_CHARS = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9 ._:@/+=,;()\[\]-]")


def excerpt(value: Any) -> Any:
    """A value from the request as an error answer may show it: strings cut to a short,
    sanitised excerpt (the input may be huge, biometric, or meant for a log injection)."""
    if isinstance(value, str):
        cut = value[:_EXCERPT_CHARS]
        return _UNSAFE.sub("?", cut) + ("..." if len(value) > _EXCERPT_CHARS else "")
    if isinstance(value, (list, tuple)):
        return [excerpt(item) for item in value[:10]]
    if isinstance(value, dict):
        return {excerpt(str(key)): excerpt(item) for key, item in list(value.items())[:10]}
    return value


def _validation_code(exc: RequestValidationError) -> str:
    for error in exc.errors():
        if error.get("type") in ("json_invalid", "model_attributes_type") and len(error.get("loc", ())) <= 2:
            return "malformed_json"
        location = [part for part in error.get("loc", ()) if isinstance(part, str)]
        if error.get("type") == "extra_forbidden":
            return "unknown_field"
        for part in reversed(location):
            if part in _FIELD_CODES:
                return _FIELD_CODES[part]
    return "invalid_request"


def error_json(scope: Scope, body: dict[str, Any], status_code: int,
               headers: dict[str, str] | None = None) -> JSONResponse:
    """The one way an error answer is built: the body, and its code noted for the metrics."""
    scope.setdefault("state", {})[ERROR_CODE_STATE] = body["detail"]
    return JSONResponse(body, status_code=status_code, headers=headers)


def refusal(scope: Scope, error: DomainError) -> JSONResponse:
    """A domain error's answer; the values it carries may come from the request: excerpts."""
    body = {key: value if key == "detail" else excerpt(value) for key, value in error.body().items()}
    return error_json(scope, body, error.status_code)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> JSONResponse:
        return refusal(request.scope, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Locations name client-chosen keys (an unknown field's name can be 200 KB): excerpts.
        # Messages are pydantic's own words, never the input.
        errors = [
            {"loc": excerpt(list(e.get("loc", ()))), "msg": str(e.get("msg", ""))[:200],
             "type": str(e.get("type", ""))}
            for e in exc.errors()[:10]
        ]
        return error_json(request.scope, {"detail": _validation_code(exc), "errors": errors}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, DomainError):
            # FastAPI wraps any error raised while reading the body (the body limit's
            # refusal of a chunked body) in a 400 "error parsing the body": answer the cause.
            return refusal(request.scope, exc.__cause__)
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail.islower() else None
        return error_json(request.scope, {"detail": detail or _HTTP_CODES.get(exc.status_code, "http_error")},
                          exc.status_code)

    @app.exception_handler(RayError)
    async def backend_down(request: Request, exc: RayError) -> JSONResponse:
        if isinstance(exc, RayTaskError) and isinstance(exc.cause, DomainError):
            # A deployment refused with a code of its own (e.g. a store refusing a wrong profile).
            return refusal(request.scope, exc.cause)
        if isinstance(exc, RayTaskError):
            # The backend ran and raised: a defect, not an outage.
            logger.error("backend error: %s", exc)
            return error_json(request.scope, {"detail": "internal_error"}, 500)
        # A replica died or is restarting: retryable.
        logger.warning("backend unavailable: %s", type(exc).__name__)
        return error_json(request.scope, {"detail": "backend_unavailable"}, 503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return error_json(request.scope, {"detail": "internal_error"}, 500)
