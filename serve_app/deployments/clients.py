"""Typed clients of the deployment handles: each method is one declared method of the
deployment behind it (`handle.<method>.remote(...)`), so the Gateway's calls are checked
by the type checker against the ports the flows use, and Serve sees each operation by
its own name."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.serve.handle import DeploymentHandle

from serve_app.embedding import EmbedRequest, EmbedResult
from serve_app.repository import (
    ErasedIdentity,
    ErasedTenant,
    GalleryFace,
    Identity,
    IdentityMatch,
    RetagResult,
    StoreStats,
    StoredImage,
)
from serve_app.store.base import Hit


class EmbedderClient:
    """The FaceEmbedder deployment as an `EmbedderPort` (and a health check)."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        self._handle = handle

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        result: EmbedResult = await self._handle.embed.remote(request)
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

    async def get_identity(self, tenant_id: str, identity_id: str) -> Identity | None:
        identity: Identity | None = await self._handle.get_identity.remote(tenant_id, identity_id)
        return identity

    async def save_identity(self, tenant_id: str, identity_id: str, template: np.ndarray,
                            enrollment_faces: Sequence[GalleryFace], extra: dict[str, object]) -> None:
        await self._handle.save_identity.remote(tenant_id, identity_id, template, enrollment_faces, extra)

    async def delete_identity(self, tenant_id: str, identity_id: str) -> ErasedIdentity | None:
        erased: ErasedIdentity | None = await self._handle.delete_identity.remote(tenant_id, identity_id)
        return erased

    async def delete_tenant(self, tenant_id: str) -> ErasedTenant:
        erased: ErasedTenant = await self._handle.delete_tenant.remote(tenant_id)
        return erased

    async def search_faces(self, tenant_id: str, vector: np.ndarray, limit: int,
                           identity_id: str | None = None, hnsw_ef: int | None = None) -> list[Hit]:
        hits: list[Hit] = await self._handle.search_faces.remote(tenant_id, vector, limit, identity_id, hnsw_ef)
        return hits

    async def identity_with_gallery(self, tenant_id: str, identity_id: str, probe: np.ndarray, limit: int,
                                    hnsw_ef: int | None = None) -> tuple[Identity | None, list[Hit]]:
        found: tuple[Identity | None, list[Hit]] = await self._handle.identity_with_gallery.remote(
            tenant_id, identity_id, probe, limit, hnsw_ef)
        return found

    async def find_duplicate(self, tenant_id: str, p_hash: str, max_distance: int) -> StoredImage | None:
        duplicate: StoredImage | None = await self._handle.find_duplicate.remote(tenant_id, p_hash, max_distance)
        return duplicate

    async def match_identities(self, tenant_id: str, vectors: Sequence[np.ndarray],
                               min_cosine: float) -> list[IdentityMatch | None]:
        matches: list[IdentityMatch | None] = await self._handle.match_identities.remote(
            tenant_id, vectors, min_cosine)
        return matches

    async def add_faces(self, tenant_id: str, faces: Sequence[GalleryFace]) -> None:
        await self._handle.add_faces.remote(tenant_id, faces)

    async def retag_identity(self, tenant_id: str, identity_id: str, template: np.ndarray,
                             min_cosine: float, limit: int) -> RetagResult:
        retagged: RetagResult = await self._handle.retag_identity.remote(tenant_id, identity_id, template,
                                                                          min_cosine, limit)
        return retagged
