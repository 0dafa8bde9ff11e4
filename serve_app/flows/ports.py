"""What the flows need from the outside world, as async interfaces.

In the Serve graph the ports are DeploymentHandles (see `serve_app.deployments.gateway`);
in tests they wrap plain objects (`LocalPort`) or fakes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from serve_app.config import Settings
from serve_app.embedding import EmbedRequest, EmbedResult
from serve_app.repository import AddedImage, GalleryFace, Identity, IdentityMatch, StoredImage
from serve_app.store.base import Hit


class EmbedderPort(Protocol):
    async def embed(self, request: EmbedRequest) -> EmbedResult: ...


class RepositoryPort(Protocol):
    """The async mirror of `serve_app.repository.FaceRepository`."""

    async def get_identity(self, tenant_id: str, identity_id: str) -> Identity | None: ...

    async def save_identity(self, tenant_id: str, identity_id: str, template: np.ndarray,
                            enrollment_faces: list[GalleryFace], extra: dict[str, Any]) -> str: ...

    async def search_faces(self, tenant_id: str, vector: np.ndarray, limit: int,
                           identity_id: str | None = None, hnsw_ef: int | None = None) -> list[Hit]: ...

    async def identity_with_gallery(self, tenant_id: str, identity_id: str, probe: np.ndarray, limit: int,
                                    hnsw_ef: int | None = None) -> tuple[Identity | None, list[Hit]]: ...

    async def find_duplicate(self, tenant_id: str, p_hash: str, max_distance: int) -> StoredImage | None: ...

    async def match_identities(self, tenant_id: str, vectors: list[np.ndarray],
                               min_cosine: float) -> list[IdentityMatch | None]: ...

    async def add_image(self, tenant_id: str, image_id: str, p_hash: str, faces: list[GalleryFace],
                        max_distance: int) -> AddedImage: ...

    async def retag_identity(self, tenant_id: str, identity_id: str, template: np.ndarray,
                             min_cosine: float, limit: int, generation: str | None = None) -> dict[str, int]: ...


@dataclass(frozen=True)
class Ports:
    embedder: EmbedderPort
    repository: RepositoryPort
    settings: Settings


class LocalPort:
    """Exposes every public method of a plain object as a coroutine run in a thread."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._target, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(method, *args, **kwargs)

        return call


class PipelineEmbedder:
    """An `EmbedderPort` over an in-process `FacePipeline` (no batching across calls)."""

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        results = await asyncio.to_thread(self._pipeline.run, [request])
        return results[0]
