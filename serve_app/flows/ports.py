"""What the flows need from the outside world, as async interfaces, and in-process adapters.

In the Serve graph the ports are typed clients of the deployment handles
(`serve_app.deployments.clients`); in one process (tests, bulk ingest, the benchmark's
in-process peer) they are the adapters below, which run the blocking calls in threads.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from serve_app.config import Settings
from serve_app.embedding import EmbedRequest, EmbedResult, FacePipeline
from serve_app.repository import (
    AddedImage,
    CleanupResult,
    CollectionState,
    ErasedIdentity,
    ErasedTenant,
    FaceRepository,
    GalleryFace,
    Identity,
    IdentityMatch,
    IdentityView,
    RetagResult,
    StoreStats,
    StoredImage,
)
from serve_app.stage_timing import record_batch
from serve_app.vectordb.base import Hit, Record

if TYPE_CHECKING:
    from serve_app.backup import Manifest
    from serve_app.model_identity import ModelIdentity


class EmbedderPort(Protocol):
    async def embed(self, request: EmbedRequest) -> EmbedResult: ...


class RepositoryPort(Protocol):
    """The async mirror of `serve_app.repository.FaceRepository`: every operation the
    service runs against its store. `FaceStore` (the deployment), its typed client and
    `ThreadedRepository` implement exactly these methods (tests/test_seams.py checks)."""

    async def stats(self) -> StoreStats: ...

    async def get_identity(self, tenant_id: str, identity_id: str) -> Identity | None: ...

    async def save_identity(self, tenant_id: str, identity_id: str, template: np.ndarray,
                            enrollment_faces: Sequence[GalleryFace], extra: dict[str, object]) -> str: ...

    async def delete_identity(self, tenant_id: str, identity_id: str) -> ErasedIdentity | None: ...

    async def delete_tenant(self, tenant_id: str) -> ErasedTenant: ...

    async def search_faces(self, tenant_id: str, vector: np.ndarray, limit: int,
                           identity_id: str | None = None, hnsw_ef: int | None = None) -> list[Hit]: ...

    async def identity_with_gallery(self, tenant_id: str, identity_id: str, probe: np.ndarray, limit: int,
                                    hnsw_ef: int | None = None) -> tuple[Identity | None, list[Hit]]: ...

    async def find_duplicate(self, tenant_id: str, p_hash: str, max_distance: int) -> StoredImage | None: ...

    async def match_identities(self, tenant_id: str, vectors: Sequence[np.ndarray],
                               min_cosine: float) -> list[IdentityMatch | None]: ...

    async def add_image(self, tenant_id: str, image_id: str, p_hash: str, faces: Sequence[GalleryFace],
                        max_distance: int) -> AddedImage: ...

    async def retag_identity(self, tenant_id: str, identity_id: str, template: np.ndarray,
                             min_cosine: float, limit: int, generation: str | None = None) -> RetagResult: ...


class AdminPort(Protocol):
    """The operator's store operations (admin routes, `face-ops`): views, cleanup, backup.
    `FaceStore`, its typed client and `ThreadedAdmin` implement exactly these."""

    async def describe_collections(self) -> list[CollectionState]: ...

    async def ensure_collections(self) -> list[CollectionState]: ...

    async def describe_identity(self, tenant_id: str, identity_id: str,
                                with_vectors: bool) -> IdentityView | None: ...

    async def enrollment_faces(self, tenant_id: str, identity_id: str, with_vectors: bool) -> list[Record]: ...

    async def cleanup_identities(self, tenant_id: str, prefix: str, apply: bool) -> CleanupResult: ...

    async def backup(self, name: str | None, collections: list[str] | None) -> tuple[str, Manifest]: ...

    async def model(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Ports:
    embedder: EmbedderPort
    repository: RepositoryPort
    settings: Settings


class ThreadedRepository:
    """A `RepositoryPort` over an in-process `FaceRepository`: storage calls block, so
    each runs in a worker thread and the event loop keeps serving. The FaceStore
    deployment is this class with a place in the graph."""

    def __init__(self, repository: FaceRepository) -> None:
        self.repository = repository

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", **dataclasses.asdict(await self.stats())}

    async def stats(self) -> StoreStats:
        return await asyncio.to_thread(self.repository.stats)

    async def get_identity(self, tenant_id: str, identity_id: str) -> Identity | None:
        return await asyncio.to_thread(self.repository.get_identity, tenant_id, identity_id)

    async def save_identity(self, tenant_id: str, identity_id: str, template: np.ndarray,
                            enrollment_faces: Sequence[GalleryFace], extra: dict[str, object]) -> str:
        return await asyncio.to_thread(self.repository.save_identity, tenant_id, identity_id, template,
                                       enrollment_faces, extra)

    async def delete_identity(self, tenant_id: str, identity_id: str) -> ErasedIdentity | None:
        return await asyncio.to_thread(self.repository.delete_identity, tenant_id, identity_id)

    async def delete_tenant(self, tenant_id: str) -> ErasedTenant:
        return await asyncio.to_thread(self.repository.delete_tenant, tenant_id)

    async def search_faces(self, tenant_id: str, vector: np.ndarray, limit: int,
                           identity_id: str | None = None, hnsw_ef: int | None = None) -> list[Hit]:
        return await asyncio.to_thread(self.repository.search_faces, tenant_id, vector, limit, identity_id, hnsw_ef)

    async def identity_with_gallery(self, tenant_id: str, identity_id: str, probe: np.ndarray, limit: int,
                                    hnsw_ef: int | None = None) -> tuple[Identity | None, list[Hit]]:
        return await asyncio.to_thread(self.repository.identity_with_gallery, tenant_id, identity_id, probe,
                                       limit, hnsw_ef)

    async def find_duplicate(self, tenant_id: str, p_hash: str, max_distance: int) -> StoredImage | None:
        return await asyncio.to_thread(self.repository.find_duplicate, tenant_id, p_hash, max_distance)

    async def match_identities(self, tenant_id: str, vectors: Sequence[np.ndarray],
                               min_cosine: float) -> list[IdentityMatch | None]:
        return await asyncio.to_thread(self.repository.match_identities, tenant_id, vectors, min_cosine)

    async def add_image(self, tenant_id: str, image_id: str, p_hash: str, faces: Sequence[GalleryFace],
                        max_distance: int) -> AddedImage:
        return await asyncio.to_thread(self.repository.add_image, tenant_id, image_id, p_hash, faces, max_distance)

    async def retag_identity(self, tenant_id: str, identity_id: str, template: np.ndarray,
                             min_cosine: float, limit: int, generation: str | None = None) -> RetagResult:
        return await asyncio.to_thread(self.repository.retag_identity, tenant_id, identity_id, template,
                                       min_cosine, limit, generation)


class ThreadedAdmin:
    """An `AdminPort` over an in-process `FaceRepository`, each call in a worker thread."""

    def __init__(self, repository: FaceRepository, settings: Settings, model: ModelIdentity) -> None:
        self.repository = repository
        self.settings = settings
        self.model_identity = model

    async def describe_collections(self) -> list[CollectionState]:
        return await asyncio.to_thread(self.repository.describe_collections)

    async def ensure_collections(self) -> list[CollectionState]:
        from serve_app.model_identity import ensure_collections

        await asyncio.to_thread(ensure_collections, self.repository, self.model_identity)
        return await self.describe_collections()

    async def describe_identity(self, tenant_id: str, identity_id: str,
                                with_vectors: bool) -> IdentityView | None:
        return await asyncio.to_thread(self.repository.describe_identity, tenant_id, identity_id, with_vectors)

    async def enrollment_faces(self, tenant_id: str, identity_id: str, with_vectors: bool) -> list[Record]:
        return await asyncio.to_thread(self.repository.enrollment_faces, tenant_id, identity_id, with_vectors)

    async def cleanup_identities(self, tenant_id: str, prefix: str, apply: bool) -> CleanupResult:
        return await asyncio.to_thread(self.repository.cleanup_identities, tenant_id, prefix, apply)

    async def backup(self, name: str | None, collections: list[str] | None) -> tuple[str, Manifest]:
        from serve_app.backup import backup_into

        path, manifest = await asyncio.to_thread(backup_into, self.repository, self.settings, self.model_identity,
                                                 name, collections)
        return str(path), manifest

    async def model(self) -> dict[str, Any]:
        return self.model_identity.as_dict()


class PipelineEmbedder:
    """An `EmbedderPort` over an in-process `FacePipeline` (no batching across calls)."""

    def __init__(self, pipeline: FacePipeline) -> None:
        self._pipeline = pipeline

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        results = await asyncio.to_thread(self._pipeline.run, [request])
        record_batch(results[0].timings)
        return results[0]

    async def health(self) -> dict[str, Any]:
        return {"status": "ok", **self._pipeline.describe()}
