"""Every failure the HTTP edge can meet, turned into `{"detail": code}` with a 4xx/5xx.

No handler here ever returns a traceback or echoes the (possibly huge, possibly
biometric) request input back to the client.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray.exceptions import RayError, RayTaskError
from starlette.exceptions import HTTPException as StarletteHTTPException

from serve_app.errors import DomainError

logger = logging.getLogger("ray.serve")

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


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()[:10]
        ]
        return JSONResponse({"detail": _validation_code(exc), "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail.islower() else None
        return JSONResponse({"detail": detail or codes.get(exc.status_code, "http_error")},
                            status_code=exc.status_code)

    @app.exception_handler(RayError)
    async def backend_down(_: Request, exc: RayError) -> JSONResponse:
        if isinstance(exc, RayTaskError):
            # The backend ran and raised: a defect, not an outage.
            logger.error("backend error: %s", exc)
            return JSONResponse({"detail": "internal_error"}, status_code=500)
        # A replica died or is restarting: retryable.
        logger.warning("backend unavailable: %s", type(exc).__name__)
        return JSONResponse({"detail": "backend_unavailable"}, status_code=503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error")
        return JSONResponse({"detail": "internal_error"}, status_code=500)
