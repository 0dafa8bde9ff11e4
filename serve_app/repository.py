"""The face service's data model on top of a `VectorStore`.

Two collections (names from the config):
- identities (`identities_v1`): one template per (tenant, identity), under a point id
  derived from both, so re-enrolling replaces it.
- faces (`faces_v1`): the gallery. Enrollment photos land here too (`source:
  "enrollment"`), tagged with their identity; ingested faces follow (issue: ingestion).

Every read and write names a tenant and filters on it: no method can return another
tenant's points.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from serve_app.store.base import CollectionSpec, Hit, Record, VectorStore

# Fixed namespace so that point ids are stable across processes and releases.
_ID_NAMESPACE = uuid.UUID("5f0c1e0e-6d2b-4c53-9b0c-2b7f4c6a9e11")

FACE_INDEXES = ("tenant_id", "p_hash_prefix", "site", "identity_id")
IDENTITY_INDEXES = ("tenant_id", "identity_id")


def point_id(*parts: str) -> str:
    """A deterministic UUID for a tuple of strings (unambiguous: parts are length-prefixed)."""
    key = "".join(f"{len(part)}:{part}" for part in parts)
    return str(uuid.uuid5(_ID_NAMESPACE, key))


def identity_point_id(tenant_id: str, identity_id: str) -> str:
    return point_id("identity", tenant_id, identity_id)


@dataclass(frozen=True)
class Identity:
    tenant_id: str
    identity_id: str
    template: np.ndarray
    payload: dict[str, Any]


@dataclass(frozen=True)
class GalleryFace:
    id: str
    embedding: np.ndarray
    payload: dict[str, Any]


class FaceRepository:
    def __init__(self, store: VectorStore, faces_collection: str, identities_collection: str, dim: int) -> None:
        self.store = store
        self.faces = faces_collection
        self.identities = identities_collection
        self.dim = dim

    # --- schema -------------------------------------------------------------------
    def ensure_all(self) -> None:
        self.store.ensure_collection(CollectionSpec(self.faces, self.dim, FACE_INDEXES))
        self.store.ensure_collection(CollectionSpec(self.identities, self.dim, IDENTITY_INDEXES))

    def stats(self) -> dict[str, Any]:
        collections = {}
        for name in (self.faces, self.identities):
            info = self.store.describe(name)
            collections[name] = {"points": info.points, "keyword_indexes": list(info.keyword_indexes)}
        return {"engine": self.store.engine, "collections": collections}

    # --- identities -----------------------------------------------------------------
    def get_identity(self, tenant_id: str, identity_id: str) -> Identity | None:
        found = self.store.retrieve(self.identities, [identity_point_id(tenant_id, identity_id)], with_vectors=True)
        if not found:
            return None
        record = found[0]
        # The id already encodes the tenant; checking the payload too costs nothing.
        if record.payload.get("tenant_id") != tenant_id or record.vector is None:
            return None
        return Identity(tenant_id, identity_id, record.vector, record.payload)

    def save_identity(
        self,
        tenant_id: str,
        identity_id: str,
        template: np.ndarray,
        enrollment_faces: Sequence[GalleryFace],
        extra: dict[str, Any],
    ) -> None:
        """Store (or replace) a template and the faces of the photos it came from."""
        now = time.time()
        payload = {"tenant_id": tenant_id, "identity_id": identity_id, "enrolled_at": now, **extra}
        # Faces of a previous enrollment go first so that a re-enrollment never leaves
        # stale enrollment photos tagged with the identity.
        self.store.delete_where(self.faces, {"tenant_id": tenant_id, "identity_id": identity_id,
                                             "source": "enrollment"})
        self.store.upsert(self.faces, [
            Record(face.id, {**face.payload, "tenant_id": tenant_id, "identity_id": identity_id,
                             "source": "enrollment", "ingested_at": now}, face.embedding)
            for face in enrollment_faces
        ])
        self.store.upsert(self.identities, [Record(identity_point_id(tenant_id, identity_id), payload, template)])

    def count_identities(self, tenant_id: str) -> int:
        return self.store.count(self.identities, {"tenant_id": tenant_id})

    # --- gallery ----------------------------------------------------------------------
    def search_faces(
        self,
        tenant_id: str,
        vector: np.ndarray,
        limit: int,
        identity_id: str | None = None,
        hnsw_ef: int | None = None,
    ) -> list[Hit]:
        where: dict[str, str] = {"tenant_id": tenant_id}
        if identity_id is not None:
            where["identity_id"] = identity_id
        hits = self.store.search(self.faces, vector, where, limit, hnsw_ef=hnsw_ef)
        return [hit for hit in hits if hit.payload.get("tenant_id") == tenant_id]

    def count_faces(self, tenant_id: str) -> int:
        return self.store.count(self.faces, {"tenant_id": tenant_id})
