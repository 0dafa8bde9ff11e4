"""Who is calling, decided before the body is read, and the request's tenant.

`Authenticate` (ASGI middleware) checks the API key of every `/api/` request except
health before any byte of the body is read, so an unauthenticated caller costs no
parsing and gets 401 rather than schema errors; a caller over its request rate gets 429
with Retry-After, also before its body is read. The route dependency `Caller` then
resolves the tenant from the key, the X-Tenant-ID header and the body's `tenant_id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader
from starlette.types import ASGIApp, Receive, Scope, Send

from serve_app.auth import KeyRing, Principal, require_admin
from serve_app.errors import DomainError
from serve_app.web.errors import error_json, refusal
from serve_app.web.rate_limit import RateLimiter, retry_after_header

PRINCIPAL_STATE = "principal"
API_KEY_HEADER = "X-API-Key"
# Open without a key: liveness probes and the API docs.
_OPEN_PATHS = frozenset({"/api/v1/health"})


class Authenticate:
    def __init__(self, app: ASGIApp, keys: KeyRing, limiter: RateLimiter | None = None) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/") and scope["path"] not in _OPEN_PATHS:
            headers = dict(scope.get("headers") or [])
            key = headers.get(API_KEY_HEADER.lower().encode())
            try:
                principal = self.keys.authenticate(key.decode("latin-1") if key is not None else None)
            except DomainError as error:
                await refusal(scope, error)(scope, receive, send)
                return
            wait = self.limiter.retry_after(principal.name) if self.limiter is not None else 0.0
            if wait > 0:
                await error_json(scope, {"detail": "rate_limited", "retry_after_s": round(wait, 3)}, 429,
                                 headers={"Retry-After": retry_after_header(wait)})(scope, receive, send)
                return
            scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
        await self.app(scope, receive, send)


@dataclass(frozen=True)
class Caller:
    principal: Principal
    header_tenant: str | None

    def tenant(self, body_tenant: str | None = None) -> str:
        """The request's tenant: the key's, else the header's or the body's (never two)."""
        return self.principal.tenant_for(body_tenant, self.header_tenant)

    def require_admin(self) -> None:
        require_admin(self.principal)


# Declared for the OpenAPI schema (Swagger's "Authorize" button); checked by `Authenticate`.
_api_key_scheme = APIKeyHeader(name=API_KEY_HEADER, auto_error=False,
                               description="Required when AUTH_ENABLED")


# `async`: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per
# request for what is a field lookup.
async def _caller(request: Request, _key: Annotated[str | None, Depends(_api_key_scheme)] = None,
            x_tenant_id: Annotated[str | None, Header(alias="X-Tenant-ID",
                                                      description="Tenant, instead of tenant_id")] = None) -> Caller:
    principal = request.state.principal
    if not isinstance(principal, Principal):
        raise RuntimeError("Authenticate middleware did not run")
    return Caller(principal, x_tenant_id)


CallerDep = Annotated[Caller, Depends(_caller)]
