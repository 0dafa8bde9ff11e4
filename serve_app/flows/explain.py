"""Why a probe would (not) verify: an operator's view of one verification.

The same decision as `verify` (the probe's largest face against the identity's template,
the server's threshold), plus the probe's similarity to each enrollment photo, the margin,
and a reason in words. Free of Ray and HTTP: the admin route and `face-ops similarity`
(on a stopped store) both run it.
"""

from __future__ import annotations

from typing import Any

from serve_app.embedding import EmbedRequest
from serve_app.errors import NotFound
from serve_app.flows.ports import AdminPort, Ports
from serve_app.flows.verify import resolve_threshold
from serve_app.schemas import IdentityRef
from serve_app.schemas_admin import PhotoSimilarity, ProbeFace, SimilarityExplanation
from serve_app.similarity import cosine, similarity_from_cosine

# Below this (on the (1+cos)/2 scale) a probe is another person, not a bad photo of the
# same one: different people score at most ~0.67 with the bundled models (cosine 0.33,
# see ENROLL_MIN_SIMILARITY in serve_app.config).
DIFFERENT_PERSON_BELOW = 0.68


def _reason(similarity: float, threshold: float, best_photo: float | None, consistency: float | None) -> str:
    if similarity >= threshold:
        return (f"verifies: similarity {similarity:.4f} is at or above the threshold {threshold:.2f} "
                f"(margin {similarity - threshold:+.4f})")
    if best_photo is not None and best_photo >= threshold:
        return (f"does not verify: the template scores {similarity:.4f}, but one enrollment photo scores "
                f"{best_photo:.4f}; the enrollment photos disagree (consistency {consistency}): re-enroll "
                "with photos closer to how probes look")
    if similarity < DIFFERENT_PERSON_BELOW:
        return (f"does not verify: similarity {similarity:.4f} is what two different people score; check "
                "the identity_id and that enrollment and verification use the same tenant_id")
    return (f"does not verify: similarity {similarity:.4f} is below the threshold {threshold:.2f} by "
            f"{threshold - similarity:.4f}; a better probe (larger, frontal, sharper face) or re-enrollment "
            "with similar photos would help")


async def explain_similarity(ports: Ports, admin: AdminPort, tenant_id: str, identity_id: str, image: bytes,
                             hi_threshold: float | None = None) -> SimilarityExplanation:
    threshold = resolve_threshold(ports.settings, hi_threshold)
    identity = await ports.repository.get_identity(tenant_id, identity_id)
    if identity is None:
        raise NotFound("identity_not_enrolled", identity_id=identity_id)
    embedded = await ports.embedder.embed(EmbedRequest(image))
    face = embedded.largest()
    similarity = similarity_from_cosine(cosine(face.embedding, identity.template))
    photos = [
        PhotoSimilarity(point_id=record.id, image_index=record.payload.get("image_index"),
                        similarity=round(similarity_from_cosine(cosine(face.embedding, record.vector)), 4))
        for record in await admin.enrollment_faces(tenant_id, identity_id, True) if record.vector is not None
    ]
    best = max((photo.similarity for photo in photos), default=None)
    consistency: Any = identity.payload.get("consistency")
    return SimilarityExplanation(
        identity=IdentityRef(tenant_id=tenant_id, identity_id=identity_id),
        probe_face=ProbeFace(**face.describe(), faces_in_image=len(embedded.faces),
                             image={"width": embedded.width, "height": embedded.height}),
        similarity=round(similarity, 4),
        threshold=threshold,
        margin=round(similarity - threshold, 4),
        verified=similarity >= threshold,
        enrollment_photos=photos,
        enrollment_consistency=consistency,
        reason=_reason(similarity, threshold, best, consistency),
    )
