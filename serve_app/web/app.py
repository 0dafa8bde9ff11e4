"""The HTTP API as an app factory: `create_app(services)` builds the FastAPI app from its
settings and ports, so it runs the same inside the Gateway deployment (ports = typed
deployment clients) and in one process (tests, the benchmark's in-process peer)."""

# No `from __future__ import annotations`: FastAPI must see the real body types.
import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

from fastapi import FastAPI, Path
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from serve_app import __version__
from serve_app.auth import KeyRing
from serve_app.config import SERVICE_NAME
from serve_app.errors import DomainError, NotFound, Unavailable
from serve_app.flows import enroll as enroll_flow
from serve_app.flows import ingest as ingest_flow
from serve_app.flows import search as search_flow
from serve_app.flows import verify as verify_flow
from serve_app.flows.ports import Ports
from serve_app.images import decode_base64
from serve_app.metrics import ServiceMetrics
from serve_app.schemas import (
    ID_PATTERN,
    DeletedIdentity,
    DeletedTenant,
    EnrollRequest,
    EnrollResponse,
    ErrorBody,
    HealthResponse,
    IdentityRef,
    IngestRequest,
    IngestResponse,
    SearchRequest,
    SearchResponse,
    VerifyRequest,
    VerifyResponse,
)
from serve_app.stage_timing import stage
from serve_app.web.body_limit import BodySizeLimit
from serve_app.web.caller import Authenticate, CallerDep
from serve_app.web.errors import install_error_handlers
from serve_app.web.rate_limit import RateLimiter
from serve_app.web.request_metrics import RequestMetrics

logger = logging.getLogger("ray.serve")

HEALTH_TIMEOUT_S = 5.0
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 413, 415, 422, 503)
}
IdentityPath = Annotated[str, Path(pattern=ID_PATTERN, min_length=1, max_length=128)]
TenantPath = Annotated[str, Path(pattern=ID_PATTERN, min_length=1, max_length=64)]


class HealthCheck(Protocol):
    async def health(self) -> dict[str, Any]: ...


@dataclass
class FeatureFlags:
    """Switches an operator flips on a running service (the Gateway's `user_config`)."""

    verification_flow: bool


@dataclass(frozen=True)
class Services:
    """Everything the HTTP API needs from outside."""

    ports: Ports
    keys: KeyRing
    metrics: ServiceMetrics
    components: Mapping[str, HealthCheck]
    # Default: the flags as the settings give them, fixed for the app's life.
    flags: FeatureFlags | None = None


async def _probe(component: HealthCheck) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(component.health(), HEALTH_TIMEOUT_S)
    except Exception as error:  # any failure of a component is "down", with its reason
        logger.warning("health probe failed: %r", error)
        return {"status": "down", "error": type(error).__name__}


def create_app(services: Services) -> FastAPI:
    ports, metrics = services.ports, services.metrics
    settings = ports.settings
    flags = services.flags or FeatureFlags(verification_flow=settings.enable_verification_flow)
    # Swagger UI and ReDoc from assets in the installed package: the docs load on an
    # air-gapped network. No trailing-slash redirects: their Location would come from Host.
    api = FastAPIOffline(
        title="face-pipeline",
        version=__version__,
        description="Face enrollment, 1:1 verification (verification-first) and 1:N search.",
        redirect_slashes=False,
    )
    install_error_handlers(api)
    limiter = (RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
               if settings.auth_enabled and settings.rate_limit_per_s > 0 else None)
    # Added innermost first: metrics see everything, the body limit runs before the key check.
    api.add_middleware(Authenticate, keys=services.keys, limiter=limiter)
    api.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    api.add_middleware(RequestMetrics, metrics=metrics, routes=api.router.routes)

    def image(value: str, index: int | None = None) -> bytes:
        try:
            with stage("decode"):
                return decode_base64(value, settings.max_image_bytes)
        except DomainError as error:
            if index is not None:
                error.extra.setdefault("image_index", index)
            raise

    def require_flow() -> None:
        if not flags.verification_flow:
            raise Unavailable("verification_flow_disabled")

    # HEAD too: load balancers and `curl -I` probe with it.
    @api.head("/api/v1/health", include_in_schema=False)
    @api.get("/api/v1/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health() -> JSONResponse:
        names = list(services.components)
        states = await asyncio.gather(*(_probe(services.components[name]) for name in names))
        for name, state in zip(names, states, strict=True):
            metrics.component_health(name, state.get("status") == "ok")
        healthy = all(state.get("status") == "ok" for state in states)
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "service": SERVICE_NAME,
            "version": __version__,
            "verification_flow": flags.verification_flow,
            "components": dict(zip(names, states, strict=True)),
            # A key-file problem leaves the last good keys in force: reported, not unhealthy.
            "auth": services.keys.status(),
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    @api.post("/api/v1/enroll_identity", response_model=EnrollResponse, responses=ERRORS)
    async def enroll_identity(body: EnrollRequest, caller: CallerDep) -> EnrollResponse:
        tenant = caller.tenant(body.tenant_id)
        require_flow()
        if not body.images_b64:
            raise DomainError("no_images", 422)
        if len(body.images_b64) > settings.max_enroll_images:
            raise DomainError("too_many_images", 422, max_images=settings.max_enroll_images)
        images = [image(value, index) for index, value in enumerate(body.images_b64)]
        return await enroll_flow.enroll_identity(ports, tenant, body.identity_id, images)

    @api.post("/api/v1/verify", response_model=VerifyResponse, responses=ERRORS)
    async def verify(body: VerifyRequest, caller: CallerDep) -> VerifyResponse:
        tenant = caller.tenant(body.tenant_id)
        require_flow()
        answer = await verify_flow.verify(ports, tenant, body.identity_id, image(body.image_b64), body.hi_threshold)
        metrics.verification_result(answer.verified, answer.similarity)
        return answer

    @api.post("/api/v1/ingest", response_model=IngestResponse, responses=ERRORS)
    async def ingest(body: IngestRequest, caller: CallerDep) -> IngestResponse:
        tenant = caller.tenant(body.tenant_id)
        if len(body.metadata) > settings.max_metadata_fields:
            raise DomainError("too_many_metadata_fields", 422, max_fields=settings.max_metadata_fields)
        return await ingest_flow.ingest_image(ports, tenant, body.site, image(body.image_b64), body.url,
                                              body.metadata)

    @api.post("/api/v1/search", response_model=SearchResponse, responses=ERRORS)
    async def search(body: SearchRequest, caller: CallerDep) -> SearchResponse:
        tenant = caller.tenant(body.tenant_id)
        if not 1 <= body.top_k <= settings.search_max_top_k:
            raise DomainError("top_k_out_of_range", 422, min=1, max=settings.search_max_top_k)
        return await search_flow.search(ports, tenant, image(body.image_b64), body.top_k)

    @api.delete("/api/v1/identities/{identity_id}", response_model=DeletedIdentity, responses=ERRORS)
    async def delete_identity(identity_id: IdentityPath, caller: CallerDep) -> DeletedIdentity:
        """Erase a person: template, enrollment photos, and their tag on gallery faces."""
        tenant = caller.tenant()
        erased = await ports.repository.delete_identity(tenant, identity_id)
        if erased is None:
            raise NotFound("identity_not_enrolled", identity_id=identity_id)
        return DeletedIdentity(deleted=True, identity=IdentityRef(tenant_id=tenant, identity_id=identity_id),
                               enrollment_faces_deleted=erased.enrollment_faces_deleted,
                               gallery_faces_untagged=erased.gallery_faces_untagged)

    @api.delete("/api/v1/admin/tenants/{tenant_id}", response_model=DeletedTenant, responses=ERRORS)
    async def delete_tenant(tenant_id: TenantPath, caller: CallerDep) -> DeletedTenant:
        """Operator action: erase every identity and gallery face of a tenant."""
        caller.require_admin()
        erased = await ports.repository.delete_tenant(tenant_id)
        logger.warning("tenant %s erased: %s", tenant_id, erased)
        return DeletedTenant(deleted=True, tenant_id=tenant_id, identities_deleted=erased.identities_deleted,
                             faces_deleted=erased.faces_deleted)

    return api
