"""Typed clients of the deployment handles: each method is one declared method of the
deployment behind it (`handle.<method>.remote(...)`), so the Gateway's calls are checked
by the type checker against the ports the flows use, and Serve sees each operation by
its own name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from serve_app.embedding import EmbedRequest, EmbedResult
from serve_app.repository import (
    AddedImage,
    CleanupResult,
    CollectionState,
    ErasedIdentity,
    ErasedTenant,
    GalleryFace,
    Identity,
    IdentityMatch,
    IdentityView,
    RetagResult,
    StoreStats,
    StoredImage,
)
from serve_app.stage_timing import record_batch, timed_stage
from serve_app.vectordb.base import Hit, Record

if TYPE_CHECKING:
    from serve_app.backup import Manifest

# Store calls as the Gateway waits for them (the hop to FaceStore included) are the
# request's "store" stage in its Server-Timing header.
store_stage = timed_stage("store")


class EmbedderClient:
    """The FaceEmbedder deployment as an `EmbedderPort` (and a health check)."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        result: EmbedResult = await self._handle.embed.remote(request)
        record_batch(result.timings)
        return result

    async def health(self) -> dict[str, Any]:
        state: dict[str, Any] = await self._handle.health.remote()
        return state


class StoreClient:
    """The FaceStore deployment as a `RepositoryPort` (and a health check)."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    async def health(self) -> dict[str, Any]:
        state: dict[str, Any] = await self._handle.health.remote()
        return state

    async def stats(self) -> StoreStats:
        stats: StoreStats = await self._handle.stats.remote()
        return stats

    @store_stage
    async def get_identity(self, tenant_id: str, identity_id: str) -> Identity | None:
        identity: Identity | None = await self._handle.get_identity.remote(tenant_id, identity_id)
        return identity

    @store_stage
    async def save_identity(self, tenant_id: str, identity_id: str, template: np.ndarray,
                            enrollment_faces: Sequence[GalleryFace], extra: dict[str, object]) -> str:
        generation: str = await self._handle.save_identity.remote(tenant_id, identity_id, template,
                                                                  enrollment_faces, extra)
        return generation

    @store_stage
    async def delete_identity(self, tenant_id: str, identity_id: str) -> ErasedIdentity | None:
        erased: ErasedIdentity | None = await self._handle.delete_identity.remote(tenant_id, identity_id)
        return erased

    @store_stage
    async def delete_tenant(self, tenant_id: str) -> ErasedTenant:
        erased: ErasedTenant = await self._handle.delete_tenant.remote(tenant_id)
        return erased

    @store_stage
    async def search_faces(self, tenant_id: str, vector: np.ndarray, limit: int,
                           identity_id: str | None = None, hnsw_ef: int | None = None) -> list[Hit]:
        hits: list[Hit] = await self._handle.search_faces.remote(tenant_id, vector, limit, identity_id, hnsw_ef)
        return hits

    @store_stage
    async def identity_with_gallery(self, tenant_id: str, identity_id: str, probe: np.ndarray, limit: int,
                                    hnsw_ef: int | None = None) -> tuple[Identity | None, list[Hit]]:
        found: tuple[Identity | None, list[Hit]] = await self._handle.identity_with_gallery.remote(
            tenant_id, identity_id, probe, limit, hnsw_ef)
        return found

    @store_stage
    async def find_duplicate(self, tenant_id: str, p_hash: str, max_distance: int) -> StoredImage | None:
        duplicate: StoredImage | None = await self._handle.find_duplicate.remote(tenant_id, p_hash, max_distance)
        return duplicate

    @store_stage
    async def match_identities(self, tenant_id: str, vectors: Sequence[np.ndarray],
                               min_cosine: float) -> list[IdentityMatch | None]:
        matches: list[IdentityMatch | None] = await self._handle.match_identities.remote(
            tenant_id, vectors, min_cosine)
        return matches

    @store_stage
    async def add_image(self, tenant_id: str, image_id: str, p_hash: str, faces: Sequence[GalleryFace],
                        max_distance: int) -> AddedImage:
        added: AddedImage = await self._handle.add_image.remote(tenant_id, image_id, p_hash, faces, max_distance)
        return added

    @store_stage
    async def retag_identity(self, tenant_id: str, identity_id: str, template: np.ndarray,
                             min_cosine: float, limit: int, generation: str | None = None) -> RetagResult:
        retagged: RetagResult = await self._handle.retag_identity.remote(tenant_id, identity_id, template,
                                                                          min_cosine, limit, generation)
        return retagged


class AdminClient:
    """The FaceStore deployment's operator methods as an `AdminPort`."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    async def describe_collections(self) -> list[CollectionState]:
        states: list[CollectionState] = await self._handle.describe_collections.remote()
        return states

    async def ensure_collections(self) -> list[CollectionState]:
        states: list[CollectionState] = await self._handle.ensure_collections.remote()
        return states

    async def describe_identity(self, tenant_id: str, identity_id: str,
                                with_vectors: bool) -> IdentityView | None:
        view: IdentityView | None = await self._handle.describe_identity.remote(tenant_id, identity_id,
                                                                                with_vectors)
        return view

    async def enrollment_faces(self, tenant_id: str, identity_id: str, with_vectors: bool) -> list[Record]:
        faces: list[Record] = await self._handle.enrollment_faces.remote(tenant_id, identity_id, with_vectors)
        return faces

    async def cleanup_identities(self, tenant_id: str, prefix: str, apply: bool) -> CleanupResult:
        result: CleanupResult = await self._handle.cleanup_identities.remote(tenant_id, prefix, apply)
        return result

    async def backup(self, name: str | None, collections: list[str] | None) -> tuple[str, Manifest]:
        made: tuple[str, Manifest] = await self._handle.backup.remote(name, collections)
        return made

    async def model(self) -> dict[str, Any]:
        model: dict[str, Any] = await self._handle.model.remote()
        return model
