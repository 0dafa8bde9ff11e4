"""The face service's data model on top of a `VectorStore`.

Two collections (names from the config):
- identities (`identities_v1`): one template per (tenant, identity), under a point id
  derived from both, so re-enrolling replaces it.
- faces (`faces_v1`): the gallery. Ingested faces (`source: "ingest"`) carry the
  image's perceptual hash for de-duplication and, when they match an enrolled identity,
  its `identity_id`. Enrollment photos land here too (`source: "enrollment"`).

Every read and write names a tenant and filters on it: no method can return another
tenant's points.

Ordering without locks. Several FaceStore replicas in different processes write to one
Qdrant, so an identity's writes are ordered through the data (no lock in a process could
order them):
- Every enrollment writes its template under a fresh `generation` (a random token, never
  reused), and only AFTER that its enrollment photos and gallery tags, each carrying
  `identity_gen`. So a face naming (identity, G) implies that template G was written; if
  the template is later seen to hold anything else (another generation, or nothing: erased),
  G can never come back, and every face naming (identity, G) is garbage forever.
- `_sweep` acts on that: read the identity's faces, THEN its template, and remove the
  photos and tags of every generation seen that is not the template's. Erasure deletes the
  template, then sweeps; an enrollment sweeps after its writes (removing its own writes if
  it was overtaken or erased meanwhile: write, re-check, compensate). A tag written after
  some sweep's read is removed by its writer's own sweep, which runs later and so sees the
  template change. Every interleaving therefore ends with only the current generation named.
- Readers never show a tag or an enrollment photo whose generation is not the template's
  (one batched read of the identities on the hits), so after a DELETE returns no answer
  names the identity, even while a late writer is still compensating.
- Gallery de-duplication: an image is written `pending`, then the near copies are re-read;
  the copies settle who stays with compare-and-set writes on each image's head face
  (`_settle`), so that of concurrent near-identical images exactly one is kept.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import numpy as np

from serve_app.dedup import hamming, hash_bands
from serve_app.vectordb.base import MODEL_KEY, CollectionSpec, Hit, Record, VectorStore

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


def enrollment_point_id(face_id: str, generation: str) -> str:
    """Where an enrollment photo is stored: one id per generation, so that a concurrent
    enrollment of the same identity never overwrites another's photos."""
    return point_id(face_id, generation)


# The template's generation; faces name the generation they were written under.
GENERATION = "generation"
TAG_KEYS = ("identity_id", "identity_score", "identity_gen")
# De-duplication: every face of an ingested image names its head face (the first); the
# head alone carries the image's state, which moves once, from pending to stored or lost.
DEDUP_HEAD, DEDUP_STATE, DEDUP_WINNER = "dedup_head", "dedup", "dedup_winner"
PENDING, STORED, LOST = "pending", "stored", "lost"


@dataclass(frozen=True)
class Identity:
    tenant_id: str
    identity_id: str
    template: np.ndarray
    payload: dict[str, Any]

    @property
    def generation(self) -> str | None:
        """None for a template written before generations existed (its faces carry none)."""
        value = self.payload.get(GENERATION)
        return None if value is None else str(value)


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
    generation: str | None = None


@dataclass(frozen=True)
class AddedImage:
    """What became of an image's faces: kept, or removed again as a near copy of another."""

    duplicate_of: StoredImage | None = None
    # Faces whose identity tag was withdrawn because that identity was erased or
    # re-enrolled while the image was being stored.
    untagged: frozenset[str] = frozenset()


@dataclass
class _Copy:
    """A stored image near a new one, with what de-duplication needs to settle between them."""

    image: StoredImage
    head: str | None  # None: stored before heads existed, counts as stored
    state: str


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
    # Points under the vector index; the rest are searched by brute force (an embedded
    # store rebuilds its index after bulk loads: serve_app.vectordb.index_upkeep).
    indexed_vectors: int | None = None


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
        # No locks: with a Qdrant server several replicas in other processes write the
        # same identities; every ordering is made through the data (see the module doc).
        self.store = store
        self.faces = faces_collection
        self.identities = identities_collection
        self.dim = dim
        # Every write holds it shared; a backup's snapshot holds it alone, so that a copy
        # never holds half of an operation (a template without its photos).
        self.write_gate = WriteGate()

    @classmethod
    def for_settings(cls, store: VectorStore, settings: Settings) -> FaceRepository:
        """The configured collections (QDRANT_COLLECTION, IDENTITY_COLLECTION, VECTOR_DIM) on `store`."""
        return cls(store, settings.faces_collection, settings.identity_collection, settings.vector_dim)

    # --- schema -------------------------------------------------------------------
    def specs(self) -> tuple[CollectionSpec, CollectionSpec]:
        return (CollectionSpec(self.faces, self.dim, FACE_INDEXES),
                CollectionSpec(self.identities, self.dim, IDENTITY_INDEXES))

    @_writes
    def ensure_all(self) -> None:
        for spec in self.specs():
            self.store.ensure_collection(spec)

    def describe_collections(self) -> list[CollectionState]:
        """Each configured collection as it is (nothing created): size, distance, points,
        payload indexes with types, the expected ones missing, and the model that wrote it."""
        described = []
        for spec in self.specs():
            if not self.store.exists(spec.name):
                described.append(CollectionState(spec.name, False, spec.dim, list(spec.keyword_indexes)))
                continue
            info = self.store.describe(spec.name)
            model = self.store.collection_metadata(spec.name).get(MODEL_KEY)
            described.append(CollectionState(
                spec.name, True, spec.dim,
                [name for name in spec.keyword_indexes if name not in info.keyword_indexes],
                info.points, info.dim, info.distance, dict(info.indexes),
                dict(model) if isinstance(model, dict) else None, info.indexed_vectors,
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

    def _generations(self, tenant_id: str, identity_ids: Iterable[str]) -> dict[str, str | None]:
        """The current generation of each of these identities that is enrolled (one read)."""
        wanted = sorted(set(identity_ids))
        if not wanted:
            return {}
        records = self.store.retrieve(self.identities, [identity_point_id(tenant_id, i) for i in wanted])
        return {str(r.payload["identity_id"]): r.payload.get(GENERATION) for r in records
                if r.payload.get("tenant_id") == tenant_id and r.payload.get("identity_id") in wanted}

    @staticmethod
    def _names_current(payload: dict[str, Any], generations: dict[str, str | None]) -> bool:
        """Whether the identity a face names (if any) is enrolled under the face's generation."""
        who = payload.get("identity_id")
        return who is None or (who in generations and generations[who] == payload.get("identity_gen"))

    @_writes
    def save_identity(
        self,
        tenant_id: str,
        identity_id: str,
        template: np.ndarray,
        enrollment_faces: Sequence[GalleryFace],
        extra: dict[str, object],
    ) -> str:
        """Store (or replace) a template and the faces of the photos it came from.

        Returns the new generation, which the re-tag of the gallery must carry."""
        generation = uuid.uuid4().hex
        now = time.time()
        payload = {"tenant_id": tenant_id, "identity_id": identity_id, "enrolled_at": now, **extra,
                   GENERATION: generation}
        # The template first: a face may name a generation only once its template is written.
        self.store.upsert(self.identities, [Record(identity_point_id(tenant_id, identity_id), payload, template)])
        self.store.upsert(self.faces, [
            Record(enrollment_point_id(face.id, generation),
                   {**face.payload, "tenant_id": tenant_id, "identity_id": identity_id, "identity_gen": generation,
                    "source": "enrollment", "ingested_at": now}, face.embedding)
            for face in enrollment_faces
        ])
        # The previous enrollment's photos go now; its gallery tags go with the re-tag.
        self._sweep(tenant_id, identity_id, enrollment_only=True)
        return generation

    def _sweep(self, tenant_id: str, identity_id: str, enrollment_only: bool = False) -> tuple[int, int]:
        """Remove the enrollment photos and gallery tags of every generation of the identity
        that is not its template's (all of them once it is erased).

        Faces are read BEFORE the template: a generation seen on a face had its template
        written earlier, so if the template now holds another, that generation is over for
        good and its faces can go, even while other writers are still at work.
        Returns (enrollment photos deleted, gallery faces untagged)."""
        where: dict[str, str] = {"tenant_id": tenant_id, "identity_id": identity_id}
        if enrollment_only:
            where["source"] = "enrollment"
        seen = self.store.scroll(self.faces, where)
        current = self._generations(tenant_id, [identity_id])
        photos: dict[str | None, int] = defaultdict(int)
        tags: dict[str | None, list[str]] = defaultdict(list)
        for record in seen:
            if record.payload.get("tenant_id") != tenant_id or self._names_current(record.payload, current):
                continue
            generation = record.payload.get("identity_gen")
            if record.payload.get("source") == "enrollment":
                photos[generation] += 1
            else:
                tags[generation].append(record.id)
        for generation in photos:
            self.store.delete_where(self.faces, {**where, "source": "enrollment", "identity_gen": generation})
        for generation, ids in tags.items():
            # Only where the face still names this generation: a newer tag stays.
            self.store.delete_payload_keys(self.faces, ids, TAG_KEYS, where={**where, "identity_gen": generation})
        return sum(photos.values()), sum(len(ids) for ids in tags.values())

    @_writes
    def delete_identity(self, tenant_id: str, identity_id: str) -> ErasedIdentity | None:
        """Erase a person: template, enrollment photos, and their tag on gallery faces.

        Returns None when the tenant has no such identity (leftovers of an interrupted
        enrollment or erasure are swept all the same)."""
        enrolled = identity_id in self._generations(tenant_id, [identity_id])
        if enrolled:
            # The template goes first: from here on, readers show nothing of this person.
            self.store.delete(self.identities, [identity_point_id(tenant_id, identity_id)])
        removed, untagged = self._sweep(tenant_id, identity_id)
        if not enrolled:
            return None
        return ErasedIdentity(enrollment_faces_deleted=removed, gallery_faces_untagged=untagged)

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
        """The photos of the identity's current enrollment (a re-enrollment in flight may
        still leave the previous generation's for its sweep)."""
        generation = self._generations(tenant_id, [identity_id]).get(identity_id)
        if generation is None:
            return []
        records = self.store.scroll(self.faces, {"tenant_id": tenant_id, "identity_id": identity_id,
                                                 "source": "enrollment", "identity_gen": generation},
                                    with_vectors=with_vectors)
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
            models = {name: self.store.collection_metadata(name).get(MODEL_KEY) for name in names}
            files = self.store.snapshot(names, dest)
            paused = time.perf_counter() - paused
        entries = {name: {"points": info.points, "dim": info.dim, "distance": info.distance,
                          "indexes": dict(info.indexes), "model": models[name], "file": files[name]}
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
        if identity_id is not None:
            current = self._generations(tenant_id, [identity_id])
            if identity_id not in current:
                return []
            return self._gallery(tenant_id, identity_id, current[identity_id], vector, limit, hnsw_ef)
        hits = self.store.search(self.faces, vector, {"tenant_id": tenant_id}, limit, hnsw_ef=hnsw_ef)
        return self._current_view(tenant_id, [hit for hit in hits if hit.payload.get("tenant_id") == tenant_id])

    def _gallery(self, tenant_id: str, identity_id: str, generation: str | None, vector: np.ndarray, limit: int,
                 hnsw_ef: int | None) -> list[Hit]:
        """The faces naming this generation of the identity (a stale tag is never among them)."""
        where = {"tenant_id": tenant_id, "identity_id": identity_id, "identity_gen": generation}
        hits = self.store.search(self.faces, vector, where, limit, hnsw_ef=hnsw_ef)
        return [hit for hit in hits if hit.payload.get("tenant_id") == tenant_id]

    def _current_view(self, tenant_id: str, hits: list[Hit]) -> list[Hit]:
        """Hits as readers may see them: a tag of an erased or replaced enrollment is
        dropped (the crawled face stays), an enrollment photo of one is not shown."""
        named = {str(hit.payload["identity_id"]) for hit in hits if hit.payload.get("identity_id") is not None}
        if not named:
            return hits
        current = self._generations(tenant_id, named)
        shown = []
        for hit in hits:
            if self._names_current(hit.payload, current):
                shown.append(hit)
            elif hit.payload.get("source") != "enrollment":
                shown.append(Hit(hit.id, hit.score, {k: v for k, v in hit.payload.items() if k not in TAG_KEYS}))
        return shown

    def identity_with_gallery(
        self, tenant_id: str, identity_id: str, probe: np.ndarray, limit: int, hnsw_ef: int | None = None
    ) -> tuple[Identity | None, list[Hit]]:
        """The identity's template and its gallery faces ranked against the probe, in one
        call: verification needs both, and each call to the store deployment costs a hop.
        (The caller shows the faces only if the probe verifies.)"""
        identity = self.get_identity(tenant_id, identity_id)
        if identity is None:
            return None, []
        return identity, self._gallery(tenant_id, identity_id, identity.generation, probe, limit, hnsw_ef)

    # --- ingestion -------------------------------------------------------------------
    def find_duplicate(self, tenant_id: str, p_hash: str, max_distance: int) -> StoredImage | None:
        """The tenant's stored image nearest to this hash, if within `max_distance` bits."""
        copies = [copy.image for copy in self._near_copies(tenant_id, p_hash, max_distance).values()
                  if copy.state != LOST]
        return min(copies, key=lambda image: (image.distance, image.image_id), default=None)

    def _near_copies(self, tenant_id: str, p_hash: str, max_distance: int,
                     exclude: str | None = None) -> dict[str, _Copy]:
        candidates = self.store.scroll(self.faces, {"tenant_id": tenant_id, "p_hash_prefix": hash_bands(p_hash)})
        copies: dict[str, _Copy] = {}
        for record in candidates:
            other = record.payload.get("p_hash")
            image_id = record.payload.get("image_id")
            if not other or not image_id or image_id == exclude or record.payload.get("tenant_id") != tenant_id:
                continue
            distance = hamming(p_hash, other)
            if distance > max_distance:
                continue
            copy = copies.get(image_id)
            if copy is None:
                head = record.payload.get(DEDUP_HEAD)
                copy = copies[image_id] = _Copy(
                    StoredImage(image_id, other, distance, [], record.payload.get("url"), record.payload.get("site")),
                    head, PENDING if head else STORED)
            copy.image.face_ids.append(record.id)
            if record.id == copy.head:
                copy.state = str(record.payload.get(DEDUP_STATE, PENDING))
        return copies

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
            matches.append(IdentityMatch(hit.payload["identity_id"], hit.score, hit.payload.get(GENERATION))
                           if hit else None)
        return matches

    @_writes
    def add_image(self, tenant_id: str, image_id: str, p_hash: str, faces: Sequence[GalleryFace],
                  max_distance: int) -> AddedImage:
        """Store the faces of one image unless a near copy (within `max_distance` bits)
        gets or got there first; then withdraw tags of identities erased meanwhile.

        Of concurrent near copies exactly one stays (`_settle`); the others remove their
        faces again and are answered with the one that stays."""
        if not faces:
            return AddedImage()
        head = faces[0].id
        records = [Record(face.id, {**face.payload, "tenant_id": tenant_id, DEDUP_HEAD: head,
                                    **({DEDUP_STATE: PENDING} if face.id == head else {})}, face.embedding)
                   for face in faces]
        # The head first: whoever finds a face of this image can then read its state. Only
        # if new: a concurrent retry of the same bytes must not reset a settled state.
        self.store.upsert(self.faces, records[:1], only_new=True)
        self.store.upsert(self.faces, records[1:])
        winner = self._settle(tenant_id, image_id, head, p_hash, max_distance)
        if winner is not None:
            self.store.delete_where(self.faces, {"tenant_id": tenant_id, "image_id": image_id})
            return AddedImage(duplicate_of=winner)
        return AddedImage(untagged=self._withdraw_stale_tags(tenant_id, records))

    def _head_states(self, copies: Iterable[_Copy]) -> None:
        """Refresh the copies' states from their heads (a head that is gone was lost)."""
        with_head = {copy.head: copy for copy in copies if copy.head is not None}
        found = {record.id: record for record in self.store.retrieve(self.faces, list(with_head))}
        for head, copy in with_head.items():
            record = found.get(head)
            copy.state = str(record.payload.get(DEDUP_STATE, PENDING)) if record is not None else LOST

    def _settle(self, tenant_id: str, image_id: str, head: str, p_hash: str, max_distance: int
                ) -> StoredImage | None:
        """Decide, after this image's faces were written, whether it stays; None if it does,
        else the near copy it gives way to.

        Both of two concurrent near copies wrote before reading, so at least one sees the
        other. A copy already stored wins. Between two pending copies the smaller image id
        wins (content addresses: every replica agrees, no clocks involved): the larger one
        gives way on its own, and the smaller one marks the larger one lost with a
        compare-and-set on its head (pending -> lost) that races the larger one's own
        (pending -> stored); exactly one of the two succeeds, so never both stay, and the
        smallest pending copy of a group always can."""
        copies = self._near_copies(tenant_id, p_hash, max_distance, exclude=image_id)
        self._head_states(copies.values())
        for copy in sorted(copies.values(), key=lambda c: c.image.image_id):
            if copy.state == LOST:
                continue
            if copy.state == STORED or copy.image.image_id < image_id:
                return copy.image
            assert copy.head is not None  # pending copies have heads
            where = {"tenant_id": tenant_id, "image_id": copy.image.image_id, DEDUP_STATE: PENDING}
            self.store.set_payload(self.faces, [copy.head], {DEDUP_STATE: LOST, DEDUP_WINNER: image_id}, where=where)
            self._head_states([copy])
            if copy.state == STORED:
                return copy.image
            # Its writer removes it too when it learns; doing it here covers a writer that died.
            self.store.delete_where(self.faces, {"tenant_id": tenant_id, "image_id": copy.image.image_id})
        mine = {"tenant_id": tenant_id, "image_id": image_id, DEDUP_STATE: PENDING}
        self.store.set_payload(self.faces, [head], {DEDUP_STATE: STORED}, where=mine)
        found = self.store.retrieve(self.faces, [head])
        if found and found[0].payload.get(DEDUP_STATE) == STORED:
            return None
        # A smaller copy marked this one lost: answer with the copy that stays.
        winner = str(found[0].payload.get(DEDUP_WINNER, "")) if found else ""
        live = [c.image for c in self._near_copies(tenant_id, p_hash, max_distance, exclude=image_id).values()
                if c.state != LOST]
        preferred = [image for image in live if image.image_id == winner]
        return (preferred or sorted(live, key=lambda i: (i.distance, i.image_id))
                or [StoredImage(winner, p_hash, 0, [])])[0]

    def _withdraw_stale_tags(self, tenant_id: str, records: Sequence[Record]) -> frozenset[str]:
        """Re-check the identities these new faces were tagged with; untag those erased or
        re-enrolled since the match (an erasure's sweep may have run before the write)."""
        tagged: dict[tuple[str, str | None], list[str]] = defaultdict(list)
        for record in records:
            if record.payload.get("identity_id") is not None:
                tagged[(str(record.payload["identity_id"]), record.payload.get("identity_gen"))].append(record.id)
        if not tagged:
            return frozenset()
        current = self._generations(tenant_id, {who for who, _ in tagged})
        stale: set[str] = set()
        for (who, generation), ids in tagged.items():
            if who in current and current[who] == generation:
                continue
            where = {"tenant_id": tenant_id, "identity_id": who, "identity_gen": generation}
            self.store.delete_payload_keys(self.faces, ids, TAG_KEYS, where=where)
            stale.update(ids)
        return frozenset(stale)

    @_writes
    def retag_identity(self, tenant_id: str, identity_id: str, template: np.ndarray, min_cosine: float,
                       limit: int, generation: str | None = None) -> RetagResult:
        """Make the gallery's ingested faces agree with generation `generation` (default:
        the current one) of `identity_id`'s template.

        Tags the faces that now match it (unless they match another enrolled identity
        better) and untags those tagged under an older generation. If the identity was
        erased or re-enrolled meanwhile, this enrollment's tags are removed again instead
        (by the sweep, which runs after the tags are written)."""
        current = self._generations(tenant_id, [identity_id])
        if generation is None:
            generation = current.get(identity_id)
        tagged = 0
        if identity_id in current and current[identity_id] == generation:
            tagged = self._tag_matches(tenant_id, identity_id, generation, template, min_cosine, limit)
        _, untagged = self._sweep(tenant_id, identity_id)
        return RetagResult(tagged=tagged, untagged=untagged)

    def _tag_matches(self, tenant_id: str, identity_id: str, generation: str | None, template: np.ndarray,
                     min_cosine: float, limit: int) -> int:
        where = {"tenant_id": tenant_id, "source": "ingest"}
        hits = [hit for hit in self.store.search(self.faces, template, where, limit, score_threshold=min_cosine)
                if hit.payload.get("tenant_id") == tenant_id]
        claims = self._generations(tenant_id, {str(hit.payload["identity_id"]) for hit in hits
                                               if hit.payload.get("identity_id") not in (None, identity_id)})
        newly: list[str] = []
        for hit in hits:
            who, was = hit.payload.get("identity_id"), hit.payload.get("identity_gen")
            if (who, was, hit.payload.get("identity_score")) == (identity_id, generation, hit.score):
                continue
            if who not in (None, identity_id) and self._names_current(hit.payload, claims) \
                    and float(hit.payload.get("identity_score", -1.0)) >= hit.score:
                continue  # another enrolled identity claims this face more strongly
            # Compare-and-set on the tag as read: a tag written meanwhile is not overwritten.
            self.store.set_payload(self.faces, [hit.id],
                                   {"identity_id": identity_id, "identity_gen": generation, "identity_score": hit.score},
                                   where={"tenant_id": tenant_id, "identity_id": who, "identity_gen": was})
            if who != identity_id:
                newly.append(hit.id)
        return sum(record.payload.get("identity_id") == identity_id and record.payload.get("identity_gen") == generation
                   for record in self.store.retrieve(self.faces, newly))
