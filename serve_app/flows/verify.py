"""Verification-first: 1:1 against the identity's template before any gallery result."""

from __future__ import annotations

import asyncio
from typing import Any

from serve_app.config import Settings
from serve_app.embedding import EmbedRequest
from serve_app.errors import DomainError, NotFound
from serve_app.flows.ports import Ports
from serve_app.flows.views import face_hit
from serve_app.similarity import cosine, similarity_from_cosine


def resolve_threshold(settings: Settings, requested: float | None) -> float:
    """The request may raise the server's threshold; it may not go below the floor."""
    if requested is None:
        return settings.verify_hi_threshold
    if requested < settings.verify_threshold_floor:
        raise DomainError("threshold_below_floor", 422, floor=settings.verify_threshold_floor)
    return float(requested)


async def verify(
    ports: Ports, tenant_id: str, identity_id: str, image: bytes, hi_threshold: float | None = None
) -> dict[str, Any]:
    settings = ports.settings
    threshold = resolve_threshold(settings, hi_threshold)
    # The template lookup and the embedding do not depend on each other: overlap them.
    identity, embedded = await asyncio.gather(
        ports.repository.get_identity(tenant_id, identity_id),
        ports.embedder.embed(EmbedRequest(image)),
    )
    if identity is None:
        raise NotFound("identity_not_enrolled", identity_id=identity_id)
    face = embedded.largest()
    similarity = similarity_from_cosine(cosine(face.embedding, identity.template))
    verified = similarity >= threshold
    results: list[dict[str, Any]] = []
    if verified:
        hits = await ports.repository.search_faces(
            tenant_id, face.embedding, settings.verify_top_k,
            identity_id=identity_id, hnsw_ef=settings.verify_hnsw_ef,
        )
        results = [face_hit(hit) for hit in hits]
    return {
        "verified": verified,
        "similarity": round(similarity, 4),
        "threshold": threshold,
        "identity": {"tenant_id": tenant_id, "identity_id": identity_id},
        "probe_face": face.describe(),
        "results": results,
        "count": len(results),
    }
