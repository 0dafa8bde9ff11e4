"""Enrollment: several photos of one person -> one identity template."""

from __future__ import annotations

import asyncio

import numpy as np

from serve_app.embedding import EmbedRequest, Face
from serve_app.errors import DomainError
from serve_app.flows.ports import Ports
from serve_app.flows.quality_gate import gate_enrollment
from serve_app.flows.views import face_info
from serve_app.repository import GalleryFace, point_id
from serve_app.schemas import EnrollResponse, IdentityRef
from serve_app.similarity import cosine_from_similarity, template_of, weakest_pair


async def embed_probes(ports: Ports, images: list[bytes]) -> list[Face]:
    """The largest face of each image, embedded concurrently so the embedder batches them."""
    results = await asyncio.gather(*(ports.embedder.embed(EmbedRequest(data)) for data in images))
    faces = []
    for index, result in enumerate(results):
        try:
            faces.append(result.largest())
        except DomainError as error:
            if len(images) > 1:
                error.extra.setdefault("image_index", index)
            raise
    return faces


async def enroll_identity(ports: Ports, tenant_id: str, identity_id: str, images: list[bytes]) -> EnrollResponse:
    settings = ports.settings
    faces = await embed_probes(ports, images)
    # A photo outside the quality limits is refused before it can shape the template.
    gate_enrollment(faces, settings)
    embeddings = np.stack([face.embedding for face in faces])
    consistency = 1.0
    if len(faces) > 1:
        consistency, pair = weakest_pair(embeddings)
        if consistency < settings.enroll_min_similarity:
            # Two different people in one enrollment would poison the template.
            raise DomainError("enrollment_faces_disagree", 422, image_indexes=list(pair),
                              similarity=round(consistency, 4),
                              min_similarity=settings.enroll_min_similarity)
    template = template_of(embeddings)
    enrollment_faces = [
        GalleryFace(
            id=point_id("enrollment", tenant_id, identity_id, str(index)),
            embedding=face.embedding,
            payload={**face.describe(), "image_index": index},
        )
        for index, face in enumerate(faces)
    ]
    generation = await ports.repository.save_identity(
        tenant_id, identity_id, template, enrollment_faces,
        {"images": len(faces), "consistency": round(consistency, 4)},
    )
    # Faces ingested before this (re-)enrollment learn who they are (or no longer are),
    # under this enrollment's generation: should a DELETE or another enrollment of the same
    # identity overtake it, the re-tag notices and takes its tags back.
    retagged = await ports.repository.retag_identity(
        tenant_id, identity_id, template, cosine_from_similarity(settings.verify_hi_threshold),
        settings.retag_max_faces, generation,
    )
    return EnrollResponse(
        ok=True,
        identity=IdentityRef(tenant_id=tenant_id, identity_id=identity_id),
        vector_dim=int(template.shape[0]),
        images_used=len(faces),
        consistency=round(consistency, 4),
        faces=[face_info(face) for face in faces],
        gallery_faces_tagged=retagged.tagged,
        gallery_faces_untagged=retagged.untagged,
    )
