"""Verification-first: 1:1 against the identity's template before any gallery result."""

from __future__ import annotations

from serve_app.config import Settings
from serve_app.embedding import EmbedRequest
from serve_app.errors import DomainError, NotFound
from serve_app.flows.ports import Ports
from serve_app.flows.quality_gate import gate_probe
from serve_app.flows.views import face_hit, face_info
from serve_app.schemas import IdentityRef, VerifyResponse
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
) -> VerifyResponse:
    settings = ports.settings
    threshold = resolve_threshold(settings, hi_threshold)
    embedded = await ports.embedder.embed(EmbedRequest(image))
    face = embedded.largest()
    gate_probe(face, settings)
    # One store call for the template and the candidate gallery faces: a second hop
    # costs more than the (filtered, tiny) search it would save when not verified.
    identity, hits = await ports.repository.identity_with_gallery(
        tenant_id, identity_id, face.embedding, settings.verify_top_k, settings.verify_hnsw_ef
    )
    if identity is None:
        raise NotFound("identity_not_enrolled", identity_id=identity_id)
    similarity = similarity_from_cosine(cosine(face.embedding, identity.template))
    verified = similarity >= threshold
    # Verification-first: nothing of the gallery is shown unless the probe verified.
    results = [face_hit(hit) for hit in hits] if verified else []
    return VerifyResponse(
        verified=verified,
        similarity=round(similarity, 4),
        threshold=threshold,
        identity=IdentityRef(tenant_id=tenant_id, identity_id=identity_id),
        probe_face=face_info(face),
        results=results,
        count=len(results),
    )
