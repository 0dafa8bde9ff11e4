"""Gateway: the HTTP ingress. Validates, resolves the tenant, decodes base64, and hands
the work to the flows, whose ports are the FaceEmbedder and FaceStore handles."""

# No `from __future__ import annotations`: FastAPI must see the real body types.
import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import FastAPI, Header, Path
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app import __version__
from serve_app.api_errors import install_error_handlers
from serve_app.auth import KeyRing, Principal, require_admin
from serve_app.body_limit import BodySizeLimit
from serve_app.config import SERVICE_NAME, Settings, get_settings
from serve_app.embedding import EmbedRequest, EmbedResult
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
    IngestRequest,
    IngestResponse,
    SearchRequest,
    SearchResponse,
    VerifyRequest,
    VerifyResponse,
)

logger = logging.getLogger("ray.serve")

HEALTH_TIMEOUT_S = 5.0
ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 413, 415, 422, 503)
}
TenantHeader = Annotated[str | None, Header(alias="X-Tenant-ID", description="Tenant, instead of tenant_id")]
ApiKeyHeader = Annotated[str | None, Header(alias="X-API-Key", description="Required when AUTH_ENABLED")]
IdentityPath = Annotated[str, Path(pattern=ID_PATTERN, min_length=1, max_length=128)]
TenantPath = Annotated[str, Path(pattern=ID_PATTERN, min_length=1, max_length=64)]

api = FastAPI(
    title="face-pipeline",
    version=__version__,
    description="Face enrollment, 1:1 verification (verification-first) and 1:N search.",
)
install_error_handlers(api)
api.add_middleware(BodySizeLimit, max_bytes=get_settings().max_request_bytes)


class HandleEmbedder:
    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        return await self._handle.embed.remote(request)


class HandleRepository:
    """The FaceStore handle seen as a `RepositoryPort`: method name + arguments travel."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._handle.call.remote(name, *args, **kwargs)

        return call


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Gateway:
    def __init__(self, embedder: DeploymentHandle, store: DeploymentHandle) -> None:
        self.settings: Settings = get_settings()
        self._embedder = embedder
        self._store = store
        self.ports = Ports(HandleEmbedder(embedder), HandleRepository(store), self.settings)
        self.metrics = ServiceMetrics()
        self.keys = KeyRing(self.settings.auth_enabled, self.settings.api_keys_file, self.settings.api_keys)

    def _tenant(self, api_key: str | None, body_tenant: str | None, header_tenant: str | None) -> str:
        principal: Principal = self.keys.authenticate(api_key)
        return principal.tenant_for(body_tenant, header_tenant)

    def _image(self, value: str, index: int | None = None) -> bytes:
        try:
            return decode_base64(value, self.settings.max_image_bytes)
        except DomainError as error:
            if index is not None:
                error.extra.setdefault("image_index", index)
            raise

    def _require_flow(self) -> None:
        if not self.settings.enable_verification_flow:
            raise Unavailable("verification_flow_disabled")

    @api.get("/api/v1/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health(self) -> Any:
        async def probe(handle: DeploymentHandle) -> dict[str, Any]:
            try:
                return await asyncio.wait_for(handle.health.remote(), HEALTH_TIMEOUT_S)
            except Exception as error:  # any failure of a component is "down", with its reason
                logger.warning("health probe failed: %r", error)
                return {"status": "down", "error": type(error).__name__}

        embedder, store = await asyncio.gather(probe(self._embedder), probe(self._store))
        healthy = embedder.get("status") == "ok" and store.get("status") == "ok"
        body = {
            "status": "healthy" if healthy else "unhealthy",
            "service": SERVICE_NAME,
            "version": __version__,
            "verification_flow": self.settings.enable_verification_flow,
            "components": {"embedder": embedder, "store": store},
        }
        return JSONResponse(body, status_code=200 if healthy else 503)

    @api.post("/api/v1/enroll_identity", response_model=EnrollResponse, responses=ERRORS)
    async def enroll_identity(self, body: EnrollRequest, x_tenant_id: TenantHeader = None,
                              x_api_key: ApiKeyHeader = None) -> Any:
        with self.metrics.enrollment() as outcome:
            tenant = self._tenant(x_api_key, body.tenant_id, x_tenant_id)
            self._require_flow()
            if not body.images_b64:
                raise DomainError("no_images", 422)
            if len(body.images_b64) > self.settings.max_enroll_images:
                raise DomainError("too_many_images", 422, max_images=self.settings.max_enroll_images)
            images = [self._image(value, index) for index, value in enumerate(body.images_b64)]
            answer = await enroll_flow.enroll_identity(self.ports, tenant, body.identity_id, images)
            outcome.success = True
        return answer

    @api.post("/api/v1/verify", response_model=VerifyResponse, responses=ERRORS)
    async def verify(self, body: VerifyRequest, x_tenant_id: TenantHeader = None,
                     x_api_key: ApiKeyHeader = None) -> Any:
        with self.metrics.verification() as outcome:
            tenant = self._tenant(x_api_key, body.tenant_id, x_tenant_id)
            self._require_flow()
            image = self._image(body.image_b64)
            answer = await verify_flow.verify(self.ports, tenant, body.identity_id, image, body.hi_threshold)
            outcome.record(answer["verified"], answer["similarity"])
        return answer

    @api.post("/api/v1/ingest", response_model=IngestResponse, responses=ERRORS)
    async def ingest(self, body: IngestRequest, x_tenant_id: TenantHeader = None,
                     x_api_key: ApiKeyHeader = None) -> Any:
        with self.metrics.refusals("ingest"):
            tenant = self._tenant(x_api_key, body.tenant_id, x_tenant_id)
            if len(body.metadata) > self.settings.max_metadata_fields:
                raise DomainError("too_many_metadata_fields", 422, max_fields=self.settings.max_metadata_fields)
            image = self._image(body.image_b64)
            return await ingest_flow.ingest_image(self.ports, tenant, body.site, image, body.url, body.metadata)

    @api.post("/api/v1/search", response_model=SearchResponse, responses=ERRORS)
    async def search(self, body: SearchRequest, x_tenant_id: TenantHeader = None,
                     x_api_key: ApiKeyHeader = None) -> Any:
        with self.metrics.refusals("search"):
            tenant = self._tenant(x_api_key, body.tenant_id, x_tenant_id)
            if not 1 <= body.top_k <= self.settings.search_max_top_k:
                raise DomainError("top_k_out_of_range", 422, min=1, max=self.settings.search_max_top_k)
            image = self._image(body.image_b64)
            started = time.perf_counter()
            answer = await search_flow.search(self.ports, tenant, image, body.top_k)
            self.metrics.search_latency(time.perf_counter() - started)
        return answer

    @api.delete("/api/v1/identities/{identity_id}", response_model=DeletedIdentity, responses=ERRORS)
    async def delete_identity(self, identity_id: IdentityPath, x_tenant_id: TenantHeader = None,
                              x_api_key: ApiKeyHeader = None) -> Any:
        """Erase a person: template, enrollment photos, and their tag on gallery faces."""
        tenant = self._tenant(x_api_key, None, x_tenant_id)
        erased = await self.ports.repository.delete_identity(tenant, identity_id)
        if erased is None:
            raise NotFound("identity_not_enrolled", identity_id=identity_id)
        return {"deleted": True, "identity": {"tenant_id": tenant, "identity_id": identity_id}, **erased}

    @api.delete("/api/v1/admin/tenants/{tenant_id}", response_model=DeletedTenant, responses=ERRORS)
    async def delete_tenant(self, tenant_id: TenantPath, x_api_key: ApiKeyHeader = None) -> Any:
        """Operator action: erase every identity and gallery face of a tenant."""
        require_admin(self.keys.authenticate(x_api_key))
        erased = await self.ports.repository.delete_tenant(tenant_id)
        logger.warning("tenant %s erased: %s", tenant_id, erased)
        return {"deleted": True, "tenant_id": tenant_id, **erased}
