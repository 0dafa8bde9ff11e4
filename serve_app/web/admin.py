"""The operator routes (`/api/v1/admin/...`, admin key when auth is on) behind `face-ops`:
collections, one identity, a similarity explanation, cleanup of test identities, backups.
Each calls a typed `AdminPort` method of the FaceStore."""

# No `from __future__ import annotations`: FastAPI must see the real body types.
import dataclasses
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from serve_app.errors import NotFound, Unavailable
from serve_app.flows.explain import explain_similarity
from serve_app.flows.ports import AdminPort, Ports
from serve_app.images import decode_base64
from serve_app.repository import CleanupResult, CollectionState
from serve_app.schemas import ID_PATTERN, ErrorBody
from serve_app.schemas_admin import (
    BackupRequest,
    BackupResponse,
    CleanupRequest,
    CollectionsResponse,
    CollectionView,
    IdentityDetail,
    SimilarityExplanation,
    SimilarityRequest,
)
from serve_app.web.caller import Caller, CallerDep

logger = logging.getLogger("ray.serve")

ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody} for code in (401, 403, 404, 409, 413, 415, 422, 503)
}
IdentityPath = Annotated[str, Path(pattern=ID_PATTERN, min_length=1, max_length=128)]
TenantPath = Annotated[str, Path(pattern=ID_PATTERN, min_length=1, max_length=64)]


def admin_router(ports: Ports, admin: AdminPort | None) -> APIRouter:
    router = APIRouter(prefix="/api/v1/admin", tags=["admin"], responses=ADMIN_ERRORS)
    settings = ports.settings

    def operator(caller: Caller) -> AdminPort:
        caller.require_admin()
        if admin is None:
            raise Unavailable("admin_unavailable")
        return admin

    async def collections(states: list[CollectionState]) -> CollectionsResponse:
        assert admin is not None
        stats = await ports.repository.stats()
        return CollectionsResponse(engine=stats.engine, model=await admin.model(),
                                   collections=[CollectionView.model_validate(dataclasses.asdict(state))
                                                for state in states])

    @router.get("/collections", response_model=CollectionsResponse)
    async def admin_collections(caller: CallerDep) -> CollectionsResponse:
        """Each collection's vector size, distance, points, payload indexes, the indexes
        missing, and the model that wrote it (creates nothing)."""
        return await collections(await operator(caller).describe_collections())

    @router.post("/collections/ensure", response_model=CollectionsResponse)
    async def admin_ensure_collections(caller: CallerDep) -> CollectionsResponse:
        """Create missing collections and payload indexes (idempotent)."""
        return await collections(await operator(caller).ensure_collections())

    @router.get("/tenants/{tenant_id}/identities/{identity_id}", response_model=IdentityDetail)
    async def admin_identity(tenant_id: TenantPath, identity_id: IdentityPath, caller: CallerDep,
                             vectors: Annotated[bool, Query(description="Include the vectors")] = False
                             ) -> IdentityDetail:
        """An identity's template metadata, enrollment photos and gallery tags."""
        view = await operator(caller).describe_identity(tenant_id, identity_id, vectors)
        if view is None:
            raise NotFound("identity_not_enrolled", identity_id=identity_id)
        return IdentityDetail.model_validate(dataclasses.asdict(view))

    @router.post("/tenants/{tenant_id}/identities/{identity_id}/similarity", response_model=SimilarityExplanation)
    async def admin_similarity(tenant_id: TenantPath, identity_id: IdentityPath, body: SimilarityRequest,
                               caller: CallerDep) -> SimilarityExplanation:
        """Why this probe would (not) verify: similarity to the template and to each
        enrollment photo, threshold, margin, reason."""
        port = operator(caller)
        image = decode_base64(body.image_b64, settings.max_image_bytes)
        return await explain_similarity(ports, port, tenant_id, identity_id, image, body.hi_threshold)

    # The repository's own result is the answer (FastAPI serves dataclasses as they are).
    @router.post("/tenants/{tenant_id}/cleanup", response_model=CleanupResult)
    async def admin_cleanup(tenant_id: TenantPath, body: CleanupRequest, caller: CallerDep) -> CleanupResult:
        """Remove (or, by default, count) a tenant's identities whose id starts with `prefix`:
        templates, enrollment photos and their gallery tags."""
        result = await operator(caller).cleanup_identities(tenant_id, body.prefix, body.apply)
        if result.applied:
            logger.warning("cleanup of tenant %s prefix %r: %d identities removed", tenant_id, body.prefix,
                           result.identities)
        return result

    @router.post("/backup", response_model=BackupResponse)
    async def admin_backup(body: BackupRequest, caller: CallerDep) -> BackupResponse:
        """A consistent snapshot of the collections under BACKUP_DIR while the service keeps
        answering (writes wait for the copy, reads go on), with its manifest."""
        path, manifest = await operator(caller).backup(body.name, body.collections)
        logger.warning("backup written to %s (writes paused %.3f s)", path, manifest.writes_paused_s)
        return BackupResponse(path=path, manifest=manifest)

    return router
