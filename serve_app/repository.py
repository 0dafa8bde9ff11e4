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

import contextlib
import functools
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from serve_app.dedup import hash_bands, hamming
from serve_app.store.base import CollectionSpec, Hit, Record, VectorStore

if TYPE_CHECKING:
    from serve_app.config import Settings

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class CollectionState:
    """A configured collection as it is: `exists` False and the rest empty when missing."""

    name: str
    exists: bool
    expected_dim: int
    missing_indexes: list[str]
    points: int | None = None
    dim: int | None = None
    distance: str | None = None
    indexes: dict[str, str] = field(default_factory=dict)
    model: dict[str, Any] | None = None


@dataclass(frozen=True)
class IdentityView:
    """An identity as stored: the template's payload, its enrollment photos (payloads),
    how many ingested gallery faces carry its tag; vectors only when asked for."""

    point_id: str
    template: dict[str, Any]
    enrollment_faces: list[dict[str, Any]]
    gallery_faces_tagged: int
    template_vector: list[float] | None = None


@dataclass(frozen=True)
class CleanupResult:
    tenant_id: str
    prefix: str
    applied: bool
    identities: int
    enrollment_faces: int
    gallery_faces_tagged: int
    identity_ids: list[str]


class WriteGate:
    """Many writers at once, or one snapshot alone (writer-preferring for the snapshot,
    so a steady stream of writes cannot starve a backup)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._writers = 0
        self._exclusive = False
        self._waiting_exclusive = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting_exclusive:
                self._cond.wait()
            self._writers += 1
        try:
            yield
        finally:
            with self._cond:
                self._writers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting_exclusive += 1
            while self._exclusive or self._writers:
                self._cond.wait()
            self._waiting_exclusive -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


P = ParamSpec("P")
R = TypeVar("R")


def _writes(method: Callable[Concatenate[FaceRepository, P], R]) -> Callable[Concatenate[FaceRepository, P], R]:
    """A repository write: whole (all its store calls) on one side of any snapshot."""

    def gated(self: FaceRepository, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.write_gate.shared():
            return method(self, *args, **kwargs)

    functools.update_wrapper(gated, method)
    return gated


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
        # Every write holds it shared; a snapshot holds it alone, so that it never sees
        # half of an enrollment (faces replaced, template not yet).
        self.write_gate = WriteGate()

    @classmethod
    def for_settings(cls, store: VectorStore, settings: Settings) -> FaceRepository:
        """The configured collections (QDRANT_COLLECTION, IDENTITY_COLLECTION, VECTOR_DIM) on `store`."""
        return cls(store, settings.faces_collection, settings.identity_collection, settings.vector_dim)

    def _identity_lock(self, tenant_id: str, identity_id: str) -> threading.Lock:
        return self._identity_locks[zlib.crc32(f"{tenant_id}/{identity_id}".encode()) % 64]

    # --- schema -------------------------------------------------------------------
    def specs(self) -> tuple[CollectionSpec, CollectionSpec]:
        return (CollectionSpec(self.faces, self.dim, FACE_INDEXES),
                CollectionSpec(self.identities, self.dim, IDENTITY_INDEXES))

    @_writes
    def ensure_all(self, model: Mapping[str, Any] | None = None) -> None:
        """Create missing collections and payload indexes (idempotent); with `model`, record
        it as the collections' writer where none is recorded, and warn where another is."""
        for spec in self.specs():
            self.store.ensure_collection(spec)
            if model is None:
                continue
            recorded = self.store.describe(spec.name).metadata.get("model")
            if recorded is None:
                self.store.set_metadata(spec.name, {"model": dict(model)})
            elif recorded != dict(model):
                logger.warning("collection %s was written by model %s, this service embeds with %s: "
                               "its vectors are not comparable", spec.name, recorded, dict(model))

    def describe_collections(self) -> list[CollectionState]:
        """Each configured collection as it is (nothing created): size, distance, points,
        payload indexes with types, the expected ones missing, and the model that wrote it."""
        described = []
        for spec in self.specs():
            if not self.store.exists(spec.name):
                described.append(CollectionState(spec.name, False, spec.dim, list(spec.keyword_indexes)))
                continue
            info = self.store.describe(spec.name)
            model = info.metadata.get("model")
            described.append(CollectionState(
                spec.name, True, spec.dim,
                [name for name in spec.keyword_indexes if name not in info.keyword_indexes],
                info.points, info.dim, info.distance, dict(info.indexes),
                dict(model) if isinstance(model, dict) else None,
            ))
        return described

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

    @_writes
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

    @_writes
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

    @_writes
    def delete_tenant(self, tenant_id: str) -> ErasedTenant:
        """Erase every point of a tenant in both collections."""
        where = {"tenant_id": tenant_id}
        erased = ErasedTenant(identities_deleted=self.store.count(self.identities, where),
                              faces_deleted=self.store.count(self.faces, where))
        self.store.delete_where(self.faces, where)
        self.store.delete_where(self.identities, where)
        return erased

    # --- operator views ---------------------------------------------------------------
    def enrollment_faces(self, tenant_id: str, identity_id: str, with_vectors: bool = False) -> list[Record]:
        records = self.store.scroll(self.faces, {"tenant_id": tenant_id, "identity_id": identity_id,
                                                 "source": "enrollment"}, with_vectors=with_vectors)
        return sorted(records, key=lambda record: int(record.payload.get("image_index", 0)))

    def describe_identity(self, tenant_id: str, identity_id: str, with_vectors: bool = False
                          ) -> IdentityView | None:
        """Template metadata, enrollment photos and how many gallery faces carry the tag."""
        identity = self.get_identity(tenant_id, identity_id)
        if identity is None:
            return None
        faces = self.enrollment_faces(tenant_id, identity_id, with_vectors)
        tagged = self.store.count(self.faces, {"tenant_id": tenant_id, "identity_id": identity_id,
                                               "source": "ingest"})

        def rounded(vector: np.ndarray | None) -> list[float] | None:
            return None if vector is None else [round(float(x), 6) for x in vector]

        photos = [{"point_id": record.id, **record.payload} | ({"vector": rounded(record.vector)} if with_vectors else {})
                  for record in faces]
        return IdentityView(identity_point_id(tenant_id, identity_id), dict(identity.payload), photos, tagged,
                            rounded(identity.template) if with_vectors else None)

    def identity_ids(self, tenant_id: str, prefix: str = "") -> list[str]:
        records = self.store.scroll(self.identities, {"tenant_id": tenant_id}, page_size=1024)
        return sorted(str(record.payload["identity_id"]) for record in records
                      if str(record.payload.get("identity_id", "")).startswith(prefix))

    def cleanup_identities(self, tenant_id: str, prefix: str = "", apply: bool = False) -> CleanupResult:
        """The tenant's identities whose id starts with `prefix` (all when empty): their
        templates, enrollment photos and gallery tags. Counts only, unless `apply`."""
        ids = self.identity_ids(tenant_id, prefix)
        enrollment = tagged = 0
        for identity_id in ids:
            if apply:
                erased = self.delete_identity(tenant_id, identity_id)
                if erased is None:
                    continue  # erased meanwhile by someone else
                enrollment += erased.enrollment_faces_deleted
                tagged += erased.gallery_faces_untagged
            else:
                where = {"tenant_id": tenant_id, "identity_id": identity_id}
                enrollment += self.store.count(self.faces, {**where, "source": "enrollment"})
                tagged += self.store.count(self.faces, {**where, "source": "ingest"})
        return CleanupResult(tenant_id, prefix, apply, len(ids), enrollment, tagged, ids)

    # --- backup -----------------------------------------------------------------------
    def snapshot(self, dest: Path, collections: Sequence[str] | None = None
                 ) -> tuple[dict[str, dict[str, Any]], float]:
        """A consistent copy of the collections under `dest`: repository writes pause (in
        flight ones finish first), reads go on. Returns each collection's counts and file,
        and for how many seconds writes were paused."""
        names = list(dict.fromkeys(collections or (self.faces, self.identities)))
        unknown = [name for name in names if name not in (self.faces, self.identities)]
        if unknown:
            raise ValueError(f"unknown collections {unknown}; this service has {self.faces}, {self.identities}")
        with self.write_gate.exclusive():
            paused = time.perf_counter()
            infos = {name: self.store.describe(name) for name in names}
            files = self.store.snapshot(names, dest)
            paused = time.perf_counter() - paused
        entries = {name: {"points": info.points, "dim": info.dim, "distance": info.distance,
                          "indexes": dict(info.indexes), "model": info.metadata.get("model"), "file": files[name]}
                   for name, info in infos.items()}
        return entries, paused

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

    @_writes
    def add_faces(self, tenant_id: str, faces: Sequence[GalleryFace]) -> None:
        self.store.upsert(self.faces, [
            Record(face.id, {**face.payload, "tenant_id": tenant_id}, face.embedding) for face in faces
        ])

    @_writes
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
