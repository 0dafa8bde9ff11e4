"""Gallery ingestion: every face of an image into `faces_v1`, de-duplicated and tagged."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from serve_app.dedup import hash_bands
from serve_app.embedding import EmbedRequest, EmbedResult, FaceSelection
from serve_app.flows.ports import Ports
from serve_app.flows.views import face_info
from serve_app.repository import GalleryFace, StoredImage, point_id
from serve_app.schemas import DuplicateOf, IngestedFace, IngestResponse, IngestStatus
from serve_app.similarity import cosine_from_similarity, similarity_from_cosine


def image_id_of(data: bytes) -> str:
    """Content address of the exact bytes: a retried upload maps to the same points."""
    return hashlib.sha256(data).hexdigest()


async def ingest_image(
    ports: Ports,
    tenant_id: str,
    site: str,
    data: bytes,
    url: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> IngestResponse:
    embedded = await ports.embedder.embed(EmbedRequest(data, FaceSelection.ALL, with_phash=True))
    return await store_embedded_image(ports, tenant_id, site, image_id_of(data), embedded, url, metadata)


async def store_embedded_image(
    ports: Ports,
    tenant_id: str,
    site: str,
    image_id: str,
    embedded: EmbedResult,
    url: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> IngestResponse:
    """De-duplicate, tag and store the faces of one embedded image (shared with bulk ingest)."""
    if embedded.error is not None:
        raise embedded.error
    settings = ports.settings
    repository = ports.repository
    p_hash = embedded.p_hash
    if p_hash is None:
        raise ValueError("ingestion needs the image's perceptual hash (EmbedRequest with_phash=True)")

    duplicate = await repository.find_duplicate(tenant_id, p_hash, settings.dedup_max_distance)
    if duplicate is not None:
        return duplicate_answer(tenant_id, image_id, p_hash, duplicate)

    matches = await repository.match_identities(
        tenant_id, [face.embedding for face in embedded.faces], cosine_from_similarity(settings.verify_hi_threshold)
    )
    now = time.time()
    common = {
        "source": "ingest", "site": site, "url": url, "image_id": image_id, "p_hash": p_hash,
        "p_hash_prefix": hash_bands(p_hash), "ingested_at": now, "image_size": [embedded.width, embedded.height],
        "metadata": dict(metadata or {}),
    }
    faces: list[GalleryFace] = []
    shown: list[IngestedFace] = []
    for index, (face, match) in enumerate(zip(embedded.faces, matches, strict=True)):
        face_id = point_id("face", tenant_id, image_id, str(index))
        payload = {**common, **face.describe(), "face_index": index}
        info = face_info(face)
        view = IngestedFace(face_id=face_id, box=info.box, det_score=info.det_score)
        if match is not None:
            payload.update(identity_id=match.identity_id, identity_score=match.cosine)
            if match.generation is not None:
                payload["identity_gen"] = match.generation
            view.identity_id = match.identity_id
            view.similarity = round(similarity_from_cosine(match.cosine), 4)
        faces.append(GalleryFace(face_id, face.embedding, payload))
        shown.append(view)
    # A near copy ingested concurrently (on another replica too) may win after all.
    added = await repository.add_image(tenant_id, image_id, p_hash, faces, settings.dedup_max_distance)
    if added.duplicate_of is not None:
        return duplicate_answer(tenant_id, image_id, p_hash, added.duplicate_of)
    for view in shown:
        if view.face_id in added.untagged:  # the identity was erased or re-enrolled meanwhile
            view.identity_id = None
            view.similarity = None
    return IngestResponse(
        status=IngestStatus.INGESTED if faces else IngestStatus.NO_FACES,
        tenant_id=tenant_id, image_id=image_id, p_hash=p_hash,
        face_ids=[face.id for face in faces], faces=shown, count=len(faces),
        small_faces_dropped=embedded.small_faces_dropped,
        excess_faces_dropped=embedded.excess_faces_dropped,
    )


def duplicate_answer(tenant_id: str, image_id: str, p_hash: str, duplicate: StoredImage) -> IngestResponse:
    return IngestResponse(
        # The very same bytes again is a retry: answer it like the first time.
        status=IngestStatus.ALREADY_INGESTED if duplicate.image_id == image_id else IngestStatus.DUPLICATE,
        tenant_id=tenant_id, image_id=image_id, p_hash=p_hash,
        duplicate_of=DuplicateOf(image_id=duplicate.image_id, url=duplicate.url, site=duplicate.site,
                                 distance=duplicate.distance),
        face_ids=sorted(duplicate.face_ids), faces=[], count=0,
    )
