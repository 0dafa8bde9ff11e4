"""Gateway: the HTTP ingress. Validates, resolves the tenant, decodes base64, and hands
the work to the flows, whose ports are the FaceEmbedder and FaceStore handles."""

# No `from __future__ import annotations`: FastAPI must see the real body types.
import asyncio
import logging
import time
from typing import Annotated, Any

from fastapi import FastAPI, Header
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app import __version__
from serve_app.api_errors import install_error_handlers, resolve_tenant
from serve_app.config import SERVICE_NAME, Settings, get_settings
from serve_app.embedding import EmbedRequest, EmbedResult
from serve_app.errors import DomainError, Unavailable
from serve_app.flows import enroll as enroll_flow
from serve_app.flows import ingest as ingest_flow
from serve_app.flows import search as search_flow
from serve_app.flows import verify as verify_flow
from serve_app.flows.ports import Ports
from serve_app.images import decode_base64
from serve_app.metrics import ServiceMetrics
from serve_app.schemas import (
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
    code: {"model": ErrorBody} for code in (403, 404, 413, 415, 422, 503)
}
TenantHeader = Annotated[str | None, Header(alias="X-Tenant-ID", description="Tenant, instead of tenant_id")]

api = FastAPI(
    title="face-pipeline",
    version=__version__,
    description="Face enrollment, 1:1 verification (verification-first) and 1:N search.",
)
install_error_handlers(api)


async def _await(response: Any) -> Any:
    return await response


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
                return await asyncio.wait_for(_await(handle.health.remote()), HEALTH_TIMEOUT_S)
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
    async def enroll_identity(self, body: EnrollRequest, x_tenant_id: TenantHeader = None) -> Any:
        self._require_flow()
        tenant = resolve_tenant(body.tenant_id, x_tenant_id)
        if not body.images_b64:
            raise DomainError("no_images", 422)
        if len(body.images_b64) > self.settings.max_enroll_images:
            raise DomainError("too_many_images", 422, max_images=self.settings.max_enroll_images)
        images = [self._image(value, index) for index, value in enumerate(body.images_b64)]
        with self.metrics.enrollment() as outcome:
            answer = await enroll_flow.enroll_identity(self.ports, tenant, body.identity_id, images)
            outcome.success = True
        return answer

    @api.post("/api/v1/verify", response_model=VerifyResponse, responses=ERRORS)
    async def verify(self, body: VerifyRequest, x_tenant_id: TenantHeader = None) -> Any:
        self._require_flow()
        tenant = resolve_tenant(body.tenant_id, x_tenant_id)
        image = self._image(body.image_b64)
        with self.metrics.verification() as outcome:
            answer = await verify_flow.verify(self.ports, tenant, body.identity_id, image, body.hi_threshold)
            outcome.record(answer["verified"], answer["similarity"])
        return answer

    @api.post("/api/v1/ingest", response_model=IngestResponse, responses=ERRORS)
    async def ingest(self, body: IngestRequest, x_tenant_id: TenantHeader = None) -> Any:
        tenant = resolve_tenant(body.tenant_id, x_tenant_id)
        if len(body.metadata) > self.settings.max_metadata_fields:
            raise DomainError("too_many_metadata_fields", 422, max_fields=self.settings.max_metadata_fields)
        image = self._image(body.image_b64)
        return await ingest_flow.ingest_image(self.ports, tenant, body.site, image, body.url, body.metadata)

    @api.post("/api/v1/search", response_model=SearchResponse, responses=ERRORS)
    async def search(self, body: SearchRequest, x_tenant_id: TenantHeader = None) -> Any:
        tenant = resolve_tenant(body.tenant_id, x_tenant_id)
        if not 1 <= body.top_k <= self.settings.search_max_top_k:
            raise DomainError("top_k_out_of_range", 422, min=1, max=self.settings.search_max_top_k)
        image = self._image(body.image_b64)
        started = time.perf_counter()
        answer = await search_flow.search(self.ports, tenant, image, body.top_k)
        self.metrics.search_latency(time.perf_counter() - started)
        return answer
