"""The face service's data model on top of a `VectorStore`.

Two collections (names from the config):
- identities (`identities_v1`): one template per (tenant, identity), under a point id
  derived from both, so re-enrolling replaces it.
- faces (`faces_v1`): the gallery. Ingested faces (`source: "ingest"`) carry the
  image's perceptual hash for de-duplication and, when they match an enrolled identity,
  its `identity_id`. Enrollment photos land here too (`source: "enrollment"`).

Every read and write names a tenant and filters on it: no method can return another
tenant's points.
"""

from __future__ import annotations

import threading
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from serve_app.dedup import hash_bands, hamming
from serve_app.store.base import CollectionSpec, Hit, Record, VectorStore

if TYPE_CHECKING:
    from serve_app.config import Settings

# Fixed namespace so that point ids are stable across processes and releases.
_ID_NAMESPACE = uuid.UUID("5f0c1e0e-6d2b-4c53-9b0c-2b7f4c6a9e11")

# The plan's four, plus image_id: resumable bulk ingestion asks "is this image in?".
FACE_INDEXES = ("tenant_id", "p_hash_prefix", "site", "identity_id", "image_id")
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


@dataclass(frozen=True)
class StoredImage:
    """An image already in the gallery, found by (near-)equal perceptual hash."""

    image_id: str
    p_hash: str
    distance: int
    face_ids: list[str]
    url: str | None = None
    site: str | None = None


@dataclass(frozen=True)
class IdentityMatch:
    identity_id: str
    cosine: float


@dataclass(frozen=True)
class ErasedIdentity:
    enrollment_faces_deleted: int
    gallery_faces_untagged: int


@dataclass(frozen=True)
class ErasedTenant:
    identities_deleted: int
    faces_deleted: int


@dataclass(frozen=True)
class RetagResult:
    tagged: int
    untagged: int


@dataclass(frozen=True)
class CollectionStats:
    points: int
    keyword_indexes: list[str]


@dataclass(frozen=True)
class StoreStats:
    engine: str
    collections: dict[str, CollectionStats]


class FaceRepository:
    def __init__(self, store: VectorStore, faces_collection: str, identities_collection: str, dim: int) -> None:
        self.store = store
        self.faces = faces_collection
        self.identities = identities_collection
        self.dim = dim
        # Writes to one identity (enroll, delete) are serialised so that concurrent
        # requests leave one consistent template and one set of enrollment faces. The
        # embedded store runs in exactly one process, where this lock is complete.
        self._identity_locks = [threading.Lock() for _ in range(64)]

    @classmethod
    def for_settings(cls, store: VectorStore, settings: Settings) -> FaceRepository:
        """The configured collections (QDRANT_COLLECTION, IDENTITY_COLLECTION, VECTOR_DIM) on `store`."""
        return cls(store, settings.faces_collection, settings.identity_collection, settings.vector_dim)

    def _identity_lock(self, tenant_id: str, identity_id: str) -> threading.Lock:
        return self._identity_locks[zlib.crc32(f"{tenant_id}/{identity_id}".encode()) % 64]

    # --- schema -------------------------------------------------------------------
    def ensure_all(self) -> None:
        self.store.ensure_collection(CollectionSpec(self.faces, self.dim, FACE_INDEXES))
        self.store.ensure_collection(CollectionSpec(self.identities, self.dim, IDENTITY_INDEXES))

    def stats(self) -> StoreStats:
        collections = {}
        for name in (self.faces, self.identities):
            info = self.store.describe(name)
            collections[name] = CollectionStats(info.points, list(info.keyword_indexes))
        return StoreStats(self.store.engine, collections)

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
        extra: dict[str, object],
    ) -> None:
        """Store (or replace) a template and the faces of the photos it came from."""
        now = time.time()
        payload = {"tenant_id": tenant_id, "identity_id": identity_id, "enrolled_at": now, **extra}
        with self._identity_lock(tenant_id, identity_id):
            self._replace_identity(tenant_id, identity_id, template, enrollment_faces, payload, now)

    def _replace_identity(self, tenant_id: str, identity_id: str, template: np.ndarray,
                          enrollment_faces: Sequence[GalleryFace], payload: dict[str, Any], now: float) -> None:
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

    def delete_identity(self, tenant_id: str, identity_id: str) -> ErasedIdentity | None:
        """Erase a person: template, enrollment photos, and their tag on gallery faces.

        Returns None when the tenant has no such identity."""
        with self._identity_lock(tenant_id, identity_id):
            if self.get_identity(tenant_id, identity_id) is None:
                return None
            enrollment = {"tenant_id": tenant_id, "identity_id": identity_id, "source": "enrollment"}
            removed = self.store.count(self.faces, enrollment)
            self.store.delete_where(self.faces, enrollment)
            tagged = [record.id for record in self.store.scroll(
                self.faces, {"tenant_id": tenant_id, "identity_id": identity_id})]
            self.store.delete_payload_keys(self.faces, tagged, ["identity_id", "identity_score"])
            self.store.delete(self.identities, [identity_point_id(tenant_id, identity_id)])
        return ErasedIdentity(enrollment_faces_deleted=removed, gallery_faces_untagged=len(tagged))

    def delete_tenant(self, tenant_id: str) -> ErasedTenant:
        """Erase every point of a tenant in both collections."""
        where = {"tenant_id": tenant_id}
        erased = ErasedTenant(identities_deleted=self.store.count(self.identities, where),
                              faces_deleted=self.store.count(self.faces, where))
        self.store.delete_where(self.faces, where)
        self.store.delete_where(self.identities, where)
        return erased

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

    def identity_with_gallery(
        self, tenant_id: str, identity_id: str, probe: np.ndarray, limit: int, hnsw_ef: int | None = None
    ) -> tuple[Identity | None, list[Hit]]:
        """The identity's template and its gallery faces ranked against the probe, in one
        call: verification needs both, and each call to the store deployment costs a hop.
        (The caller shows the faces only if the probe verifies.)"""
        identity = self.get_identity(tenant_id, identity_id)
        if identity is None:
            return None, []
        return identity, self.search_faces(tenant_id, probe, limit, identity_id=identity_id, hnsw_ef=hnsw_ef)

    # --- ingestion -------------------------------------------------------------------
    def find_duplicate(self, tenant_id: str, p_hash: str, max_distance: int) -> StoredImage | None:
        """The tenant's stored image nearest to this hash, if within `max_distance` bits."""
        candidates = self.store.scroll(self.faces, {"tenant_id": tenant_id, "p_hash_prefix": hash_bands(p_hash)})
        images: dict[str, StoredImage] = {}
        for record in candidates:
            other = record.payload.get("p_hash")
            image_id = record.payload.get("image_id")
            if not other or not image_id or record.payload.get("tenant_id") != tenant_id:
                continue
            distance = hamming(p_hash, other)
            if distance > max_distance:
                continue
            known = images.get(image_id)
            if known is None:
                images[image_id] = StoredImage(image_id, other, distance, [record.id],
                                               record.payload.get("url"), record.payload.get("site"))
            else:
                known.face_ids.append(record.id)
        if not images:
            return None
        return min(images.values(), key=lambda image: (image.distance, image.image_id))

    def ingested_image_ids(self, tenant_id: str) -> set[str]:
        """Content addresses of the tenant's gallery images that have faces stored."""
        records = self.store.scroll(self.faces, {"tenant_id": tenant_id, "source": "ingest"}, page_size=1024)
        return {str(record.payload["image_id"]) for record in records if record.payload.get("image_id")}

    def match_identities(self, tenant_id: str, vectors: Sequence[np.ndarray], min_cosine: float
                         ) -> list[IdentityMatch | None]:
        """For each face, the tenant's best enrolled identity at or above `min_cosine`."""
        matches: list[IdentityMatch | None] = []
        for vector in vectors:
            hits = self.store.search(self.identities, vector, {"tenant_id": tenant_id}, 1,
                                     score_threshold=min_cosine)
            hit = hits[0] if hits and hits[0].payload.get("tenant_id") == tenant_id else None
            matches.append(IdentityMatch(hit.payload["identity_id"], hit.score) if hit else None)
        return matches

    def add_faces(self, tenant_id: str, faces: Sequence[GalleryFace]) -> None:
        self.store.upsert(self.faces, [
            Record(face.id, {**face.payload, "tenant_id": tenant_id}, face.embedding) for face in faces
        ])

    def retag_identity(self, tenant_id: str, identity_id: str, template: np.ndarray, min_cosine: float,
                       limit: int) -> RetagResult:
        """Make the gallery's ingested faces agree with a new template of `identity_id`.

        Tags the faces that now match it (unless they match another identity better)
        and untags those it no longer matches.
        """
        where = {"tenant_id": tenant_id, "source": "ingest"}
        hits = self.store.search(self.faces, template, where, limit, score_threshold=min_cosine)
        tagged = 0
        matched: set[str] = set()
        for hit in hits:
            if hit.payload.get("tenant_id") != tenant_id:
                continue
            current = hit.payload.get("identity_id")
            if current not in (None, identity_id) and float(hit.payload.get("identity_score", -1.0)) >= hit.score:
                continue  # another identity claims this face more strongly
            matched.add(hit.id)
            if current != identity_id or hit.payload.get("identity_score") != hit.score:
                self.store.set_payload(self.faces, [hit.id], {"identity_id": identity_id,
                                                              "identity_score": hit.score})
                tagged += current != identity_id
        stale = [record.id for record in self.store.scroll(self.faces, {**where, "identity_id": identity_id})
                 if record.id not in matched]
        self.store.delete_payload_keys(self.faces, stale, ["identity_id", "identity_score"])
        return RetagResult(tagged=tagged, untagged=len(stale))
