"""One contract for both storage engines, plus the FaceRepository built on top of them.

Every test in `TestVectorStoreContract` and `TestFaceRepository` runs twice, through the
parametrized `store` fixture:
- "edge":   EdgeStore, Qdrant Edge embedded in the process, on a temporary directory;
- "server": QdrantServerStore on QdrantClient(":memory:"), qdrant-client's local mode,
            which runs the same client code path as a real Qdrant server.
Engine-specific behaviour (persistence, single-writer locking) is tested separately.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from serve_app.repository import (
    FACE_INDEXES,
    IDENTITY_INDEXES,
    FaceRepository,
    GalleryFace,
    enrollment_point_id,
    identity_point_id,
    point_id,
)
from serve_app.vectordb.base import CollectionSpec, Record, VectorStore
from serve_app.vectordb.edge import EdgeStore
from tests.helpers import faces_of, identities_of
from serve_app.vectordb.server import QdrantServerStore
from serve_app.vectordb.timed import TimedStore

DIM = 8
COLLECTION = "points"
SPEC = CollectionSpec(COLLECTION, DIM, ("tenant_id", "site"))


# --- engines ---------------------------------------------------------------------------

class RecordingClient(QdrantClient):
    """qdrant-client local mode silently drops payload indexes, so describe() can't show
    them; record what the store asked for instead."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.index_requests: list[tuple[str, str]] = []

    def create_payload_index(self, collection_name, field_name, *args, **kwargs):  # type: ignore[override]
        self.index_requests.append((collection_name, field_name))
        return super().create_payload_index(collection_name, field_name, *args, **kwargs)


class NullObserver:
    def operation(self, operation: str, collection: str, seconds: float) -> None:
        assert seconds >= 0

    def points(self, collection: str, count: int) -> None:
        assert count >= 0


@pytest.fixture(params=["edge", "server", "timed"])
def store(request, tmp_path: Path) -> Iterator[VectorStore]:
    # "timed": the FaceStore deployment's wrapper (TimedStore) must keep the contract.
    engine: VectorStore
    if request.param == "edge":
        engine = EdgeStore(tmp_path / "edge")
    elif request.param == "server":
        engine = QdrantServerStore(RecordingClient())
    else:
        engine = TimedStore(EdgeStore(tmp_path / "edge"), NullObserver())
    yield engine
    engine.close()


@pytest.fixture
def coll(store: VectorStore) -> VectorStore:
    """A store with the test collection created."""
    store.ensure_collection(SPEC)
    return store


def keyword_indexes(store: VectorStore, collection: str) -> set[str]:
    """The keyword indexes the engine holds (Edge) or was asked to create (local mode)."""
    if isinstance(store, QdrantServerStore):
        return {field for name, field in store.client.index_requests if name == collection}
    return set(store.describe(collection).keyword_indexes)


# --- data helpers ----------------------------------------------------------------------

def pid(n: int) -> str:
    """A stable UUID point id for a small integer (both engines want UUIDs or ints)."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"point-{n}"))


def basis(i: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


def rec(n: int, vector: np.ndarray | None = None, **payload) -> Record:
    return Record(pid(n), payload, basis(n % DIM) if vector is None else np.asarray(vector, dtype=np.float32))


def ids_of(items) -> set[str]:
    return {item.id for item in items}


def by_id(records) -> dict:
    return {r.id: r for r in records}


# --- the contract ----------------------------------------------------------------------

class TestVectorStoreContract:
    # collections ----------------------------------------------------------------------
    def test_ensure_collection_creates_with_dim_and_indexes(self, store):
        store.ensure_collection(SPEC)
        info = store.describe(COLLECTION)
        assert (info.name, info.dim, info.points) == (COLLECTION, DIM, 0)
        assert {"tenant_id", "site"} <= keyword_indexes(store, COLLECTION)

    def test_ensure_collection_is_idempotent_and_keeps_data(self, store):
        store.ensure_collection(SPEC)
        store.upsert(COLLECTION, [rec(1, tenant_id="a")])
        store.ensure_collection(SPEC)  # second call: no error, nothing lost
        info = store.describe(COLLECTION)
        assert (info.dim, info.points) == (DIM, 1)
        assert store.count(COLLECTION, {"tenant_id": "a"}) == 1
        assert {"tenant_id", "site"} <= keyword_indexes(store, COLLECTION)

    def test_ensure_collection_adds_new_indexes_to_existing_collection(self, store):
        store.ensure_collection(CollectionSpec(COLLECTION, DIM, ("tenant_id",)))
        store.ensure_collection(CollectionSpec(COLLECTION, DIM, ("tenant_id", "identity_id")))
        assert {"tenant_id", "identity_id"} <= keyword_indexes(store, COLLECTION)

    def test_ensure_collection_refuses_other_dim(self, store):
        # Same name, other vector size: silently accepting it would hand callers a
        # collection whose describe() disagrees with what they asked for.
        store.ensure_collection(SPEC)
        with pytest.raises(ValueError, match="-d vectors"):
            store.ensure_collection(CollectionSpec(COLLECTION, DIM * 2, SPEC.keyword_indexes))
        assert store.describe(COLLECTION).dim == DIM

    def test_unknown_collection_fails(self, store):
        # Each engine raises its own type (KeyError / the client's error): any error will do.
        with pytest.raises(Exception):  # noqa: B017
            store.count("never_created", {})

    def test_collection_metadata_starts_empty_and_merges(self, coll):
        assert coll.collection_metadata(COLLECTION) == {}
        coll.update_collection_metadata(COLLECTION, {"model": {"name": "a.onnx", "sha256": "1" * 64}})
        coll.update_collection_metadata(COLLECTION, {"note": "x"})
        assert coll.collection_metadata(COLLECTION) == {"model": {"name": "a.onnx", "sha256": "1" * 64},
                                                        "note": "x"}
        # A record of the collection, not a point: no search, count or size sees it.
        assert coll.describe(COLLECTION).points == 0

    # upsert / retrieve ----------------------------------------------------------------
    def test_upsert_then_retrieve_without_vectors(self, coll):
        coll.upsert(COLLECTION, [rec(1, tenant_id="a", label="one"), rec(2, tenant_id="b")])
        found = by_id(coll.retrieve(COLLECTION, [pid(1), pid(2)]))
        assert set(found) == {pid(1), pid(2)}
        assert found[pid(1)].payload == {"tenant_id": "a", "label": "one"}
        assert found[pid(2)].payload == {"tenant_id": "b"}
        assert all(r.vector is None for r in found.values())

    def test_upsert_then_retrieve_with_vectors(self, coll):
        # Not unit length: cosine storage normalises, so compare directions.
        original = np.arange(1, DIM + 1, dtype=np.float32)
        coll.upsert(COLLECTION, [rec(1, original, tenant_id="a")])
        [record] = coll.retrieve(COLLECTION, [pid(1)], with_vectors=True)
        assert record.id == pid(1)
        assert record.vector is not None and record.vector.shape == (DIM,)
        np.testing.assert_allclose(unit(record.vector), unit(original), atol=1e-5)

    def test_retrieve_skips_missing_ids(self, coll):
        coll.upsert(COLLECTION, [rec(1, tenant_id="a")])
        assert ids_of(coll.retrieve(COLLECTION, [pid(1), pid(99)])) == {pid(1)}
        assert coll.retrieve(COLLECTION, [pid(99)]) == []
        assert coll.retrieve(COLLECTION, []) == []

    def test_upsert_existing_id_replaces_point(self, coll):
        coll.upsert(COLLECTION, [rec(1, basis(0), tenant_id="a", old="x")])
        coll.upsert(COLLECTION, [rec(1, basis(3), tenant_id="a", new="y")])
        [record] = coll.retrieve(COLLECTION, [pid(1)], with_vectors=True)
        assert record.payload == {"tenant_id": "a", "new": "y"}  # whole payload replaced, not merged
        np.testing.assert_allclose(unit(record.vector), basis(3), atol=1e-5)
        assert coll.describe(COLLECTION).points == 1

    def test_upsert_only_new_leaves_existing_points(self, coll):
        coll.upsert(COLLECTION, [rec(1, basis(0), tenant_id="a", state="first")])
        coll.upsert(COLLECTION, [rec(1, basis(3), tenant_id="a", state="second"), rec(2, tenant_id="b")],
                    only_new=True)
        found = by_id(coll.retrieve(COLLECTION, [pid(1), pid(2)], with_vectors=True))
        assert found[pid(1)].payload == {"tenant_id": "a", "state": "first"}
        np.testing.assert_allclose(unit(found[pid(1)].vector), basis(0), atol=1e-5)
        assert found[pid(2)].payload == {"tenant_id": "b"}  # a new id is inserted

    def test_upsert_empty_is_noop(self, coll):
        coll.upsert(COLLECTION, [])
        assert coll.count(COLLECTION, {}) == 0

    # search ---------------------------------------------------------------------------
    @pytest.fixture
    def ranked(self, coll):
        """Four points at known cosine similarity to basis(0): 1, ~0.707, 0, -1."""
        coll.upsert(COLLECTION, [
            rec(1, basis(0) * 3, tenant_id="a", site="s1"),           # cos 1 (length ignored)
            rec(2, basis(0) + basis(1), tenant_id="a", site="s2"),    # cos 1/sqrt(2)
            rec(3, basis(1), tenant_id="a"),                          # cos 0, no site
            rec(4, -basis(0), tenant_id="b", site="s1"),              # cos -1
        ])
        return coll

    def test_search_ranks_by_cosine(self, ranked):
        hits = ranked.search(COLLECTION, basis(0), {}, limit=10)
        assert [h.id for h in hits] == [pid(1), pid(2), pid(3), pid(4)]
        np.testing.assert_allclose([h.score for h in hits], [1.0, 2 ** -0.5, 0.0, -1.0], atol=1e-4)
        assert hits[0].payload == {"tenant_id": "a", "site": "s1"}

    def test_search_query_length_is_irrelevant(self, ranked):
        hits = ranked.search(COLLECTION, basis(0) * 0.01, {}, limit=1)
        assert hits[0].id == pid(1)
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)

    def test_search_keyword_filter(self, ranked):
        hits = ranked.search(COLLECTION, basis(0), {"site": "s1"}, limit=10)
        assert [h.id for h in hits] == [pid(1), pid(4)]

    def test_search_several_conditions_are_anded(self, ranked):
        hits = ranked.search(COLLECTION, basis(0), {"site": "s1", "tenant_id": "b"}, limit=10)
        assert [h.id for h in hits] == [pid(4)]

    def test_search_list_filter_is_any_of(self, ranked):
        hits = ranked.search(COLLECTION, basis(0), {"site": ["s2", "s1"]}, limit=10)
        assert [h.id for h in hits] == [pid(1), pid(2), pid(4)]
        assert ranked.search(COLLECTION, basis(0), {"site": ["nowhere"]}, limit=10) == []

    def test_search_none_filter_means_field_absent(self, ranked):
        hits = ranked.search(COLLECTION, basis(0), {"site": None}, limit=10)
        assert [h.id for h in hits] == [pid(3)]

    def test_search_limit(self, ranked):
        hits = ranked.search(COLLECTION, basis(0), {}, limit=2)
        assert [h.id for h in hits] == [pid(1), pid(2)]

    def test_search_hnsw_ef_accepted(self, ranked):
        hits = ranked.search(COLLECTION, basis(0), {"tenant_id": "a"}, limit=10, hnsw_ef=128)
        assert [h.id for h in hits] == [pid(1), pid(2), pid(3)]

    def test_search_score_threshold(self, ranked):
        hits = ranked.search(COLLECTION, basis(0), {}, limit=10, score_threshold=0.5)
        assert [h.id for h in hits] == [pid(1), pid(2)]

    # scroll / count -------------------------------------------------------------------
    def test_scroll_returns_all_matches_across_pages(self, coll):
        # 23 points of tenant a and 7 of b, read 4 at a time: several pages, last one short.
        coll.upsert(COLLECTION, [rec(n, tenant_id="a" if n < 23 else "b", label=str(n)) for n in range(30)])
        records = coll.scroll(COLLECTION, {"tenant_id": "a"}, page_size=4)
        assert len(records) == 23  # no duplicates across page boundaries
        assert ids_of(records) == {pid(n) for n in range(23)}
        assert all(r.payload["tenant_id"] == "a" for r in records)
        assert all(r.vector is None for r in records)
        assert len(coll.scroll(COLLECTION, {}, page_size=4)) == 30

    def test_scroll_page_size_equal_to_count(self, coll):
        # A boundary case for the "next offset" logic: the last page is exactly full.
        coll.upsert(COLLECTION, [rec(n, tenant_id="a") for n in range(8)])
        assert ids_of(coll.scroll(COLLECTION, {}, page_size=4)) == {pid(n) for n in range(8)}

    def test_scroll_with_vectors(self, coll):
        coll.upsert(COLLECTION, [rec(n, basis(n), tenant_id="a") for n in range(5)])
        records = by_id(coll.scroll(COLLECTION, {"tenant_id": "a"}, with_vectors=True, page_size=2))
        assert set(records) == {pid(n) for n in range(5)}
        for n in range(5):
            np.testing.assert_allclose(unit(records[pid(n)].vector), basis(n), atol=1e-5)

    def test_scroll_no_match_is_empty(self, coll):
        coll.upsert(COLLECTION, [rec(1, tenant_id="a")])
        assert coll.scroll(COLLECTION, {"tenant_id": "zzz"}) == []

    def test_count_with_filter(self, ranked):
        assert ranked.count(COLLECTION, {}) == 4
        assert ranked.count(COLLECTION, {"tenant_id": "a"}) == 3
        assert ranked.count(COLLECTION, {"site": ["s1", "s2"]}) == 3
        assert ranked.count(COLLECTION, {"site": None}) == 1
        assert ranked.count(COLLECTION, {"tenant_id": "nobody"}) == 0

    # payload updates ------------------------------------------------------------------
    def test_set_payload_merges_keys(self, coll):
        coll.upsert(COLLECTION, [rec(1, tenant_id="a", keep="k", change="old"), rec(2, tenant_id="a")])
        coll.set_payload(COLLECTION, [pid(1)], {"change": "new", "added": "x"})
        found = by_id(coll.retrieve(COLLECTION, [pid(1), pid(2)], with_vectors=True))
        assert found[pid(1)].payload == {"tenant_id": "a", "keep": "k", "change": "new", "added": "x"}
        assert found[pid(2)].payload == {"tenant_id": "a"}  # untouched: not in ids
        np.testing.assert_allclose(unit(found[pid(1)].vector), basis(1), atol=1e-5)  # vector kept

    def test_set_payload_makes_point_findable_by_new_value(self, coll):
        coll.upsert(COLLECTION, [rec(1, tenant_id="a")])
        assert coll.count(COLLECTION, {"site": "s9"}) == 0
        coll.set_payload(COLLECTION, [pid(1)], {"site": "s9"})
        assert coll.count(COLLECTION, {"site": "s9"}) == 1

    def test_delete_payload_keys(self, coll):
        coll.upsert(COLLECTION, [rec(1, tenant_id="a", site="s1", x="1", y="2"), rec(2, tenant_id="a", site="s1")])
        coll.delete_payload_keys(COLLECTION, [pid(1)], ["site", "x"])
        found = by_id(coll.retrieve(COLLECTION, [pid(1), pid(2)]))
        assert found[pid(1)].payload == {"tenant_id": "a", "y": "2"}
        assert found[pid(2)].payload == {"tenant_id": "a", "site": "s1"}
        # The removed key now counts as absent for filters.
        assert ids_of(coll.scroll(COLLECTION, {"site": None})) == {pid(1)}

    # conditional payload writes (compare-and-set) -----------------------------------------
    def test_set_payload_where_changes_only_matching_points(self, coll):
        coll.upsert(COLLECTION, [rec(1, tenant_id="a", site="s1"), rec(2, tenant_id="a", site="s2"),
                                 rec(3, tenant_id="a")])
        # An id the collection does not hold is skipped, not an error.
        coll.set_payload(COLLECTION, [pid(1), pid(2), pid(3), pid(99)], {"label": "x"}, where={"site": "s1"})
        coll.set_payload(COLLECTION, [pid(1), pid(2), pid(3)], {"other": "y"}, where={"site": None})
        found = by_id(coll.retrieve(COLLECTION, [pid(1), pid(2), pid(3)], with_vectors=True))
        assert found[pid(1)].payload == {"tenant_id": "a", "site": "s1", "label": "x"}
        assert found[pid(2)].payload == {"tenant_id": "a", "site": "s2"}
        assert found[pid(3)].payload == {"tenant_id": "a", "other": "y"}
        np.testing.assert_allclose(unit(found[pid(1)].vector), basis(1), atol=1e-5)  # vector kept
        assert coll.retrieve(COLLECTION, [pid(99)]) == []  # and not created

    def test_set_payload_where_is_compare_and_set(self, coll):
        # Two writers read state "pending"; each writes its own value on that condition.
        coll.upsert(COLLECTION, [rec(1, tenant_id="a", state="pending")])
        coll.set_payload(COLLECTION, [pid(1)], {"state": "first"}, where={"state": "pending"})
        coll.set_payload(COLLECTION, [pid(1)], {"state": "second"}, where={"state": "pending"})
        assert coll.retrieve(COLLECTION, [pid(1)])[0].payload["state"] == "first"

    def test_set_payload_where_matches_all_conditions_and_any_of_lists(self, coll):
        coll.upsert(COLLECTION, [rec(1, tenant_id="a", site="s1"), rec(2, tenant_id="b", site="s1")])
        coll.set_payload(COLLECTION, [pid(1), pid(2)], {"label": "x"}, where={"tenant_id": "b", "site": ["s1", "s2"]})
        found = by_id(coll.retrieve(COLLECTION, [pid(1), pid(2)]))
        assert "label" not in found[pid(1)].payload and found[pid(2)].payload["label"] == "x"

    def test_delete_payload_keys_where(self, coll):
        coll.upsert(COLLECTION, [rec(1, tenant_id="a", site="s1", tag="t"), rec(2, tenant_id="a", site="s2", tag="t")])
        coll.delete_payload_keys(COLLECTION, [pid(1), pid(2), pid(99)], ["tag"], where={"site": "s2"})
        found = by_id(coll.retrieve(COLLECTION, [pid(1), pid(2)]))
        assert found[pid(1)].payload == {"tenant_id": "a", "site": "s1", "tag": "t"}
        assert found[pid(2)].payload == {"tenant_id": "a", "site": "s2"}

    # deletes --------------------------------------------------------------------------
    def test_delete_by_ids(self, coll):
        coll.upsert(COLLECTION, [rec(n, tenant_id="a") for n in range(4)])
        coll.delete(COLLECTION, [pid(0), pid(2), pid(99)])  # unknown ids are ignored
        assert ids_of(coll.scroll(COLLECTION, {})) == {pid(1), pid(3)}
        assert coll.retrieve(COLLECTION, [pid(0)]) == []

    def test_delete_empty_ids_is_noop(self, coll):
        coll.upsert(COLLECTION, [rec(1, tenant_id="a")])
        coll.delete(COLLECTION, [])
        assert coll.count(COLLECTION, {}) == 1

    def test_delete_where_deletes_only_matching(self, ranked):
        ranked.delete_where(COLLECTION, {"tenant_id": "a", "site": ["s1", "s2"]})
        assert ids_of(ranked.scroll(COLLECTION, {})) == {pid(3), pid(4)}

    def test_delete_where_refuses_empty_filter(self, ranked):
        with pytest.raises(ValueError):
            ranked.delete_where(COLLECTION, {})
        assert ranked.count(COLLECTION, {}) == 4  # nothing was deleted

    # tenants --------------------------------------------------------------------------
    def test_optimize_keeps_answers(self, coll):
        # Edge builds its index here; a server optimizes by itself (a no-op call).
        rng = np.random.default_rng(3)
        coll.upsert(COLLECTION, [rec(n, rng.standard_normal(DIM), tenant_id=f"t{n % 2}") for n in range(200)])
        queries = rng.standard_normal((5, DIM))
        before = [[h.id for h in coll.search(COLLECTION, q, {"tenant_id": "t1"}, 5)] for q in queries]
        coll.optimize(COLLECTION)
        after = [[h.id for h in coll.search(COLLECTION, q, {"tenant_id": "t1"}, 5)] for q in queries]
        assert after == before
        assert coll.count(COLLECTION, {}) == 200

    def test_tenant_isolation(self, coll):
        # Tenant a's points are the best matches for the query and share every other
        # field with b's: only the tenant filter can keep them out of b's results.
        coll.upsert(COLLECTION, [
            *(rec(n, basis(0), tenant_id="a", site="shared") for n in range(5)),
            *(rec(n, basis(1), tenant_id="b", site="shared") for n in range(5, 8)),
        ])
        b_ids = {pid(n) for n in range(5, 8)}
        hits = coll.search(COLLECTION, basis(0), {"tenant_id": "b"}, limit=10)
        assert ids_of(hits) == b_ids
        assert all(h.payload["tenant_id"] == "b" for h in hits)
        assert ids_of(coll.scroll(COLLECTION, {"tenant_id": "b", "site": "shared"}, page_size=2)) == b_ids
        assert coll.count(COLLECTION, {"tenant_id": "b"}) == 3
        assert coll.search(COLLECTION, basis(0), {"tenant_id": "c"}, limit=10) == []


# --- Edge only -------------------------------------------------------------------------

class TestEdgeStore:
    def test_data_persists_across_close_and_reopen(self, tmp_path):
        first = EdgeStore(tmp_path)
        first.ensure_collection(SPEC)
        first.upsert(COLLECTION, [rec(1, np.arange(1, DIM + 1), tenant_id="a"), rec(2, tenant_id="b")])
        first.set_payload(COLLECTION, [pid(1)], {"site": "s1"})
        first.delete(COLLECTION, [pid(2)])
        first.close()

        second = EdgeStore(tmp_path)
        try:
            second.ensure_collection(SPEC)
            info = second.describe(COLLECTION)
            assert (info.dim, info.points) == (DIM, 1)
            assert {"tenant_id", "site"} <= set(info.keyword_indexes)
            [record] = second.retrieve(COLLECTION, [pid(1)], with_vectors=True)
            assert record.payload == {"tenant_id": "a", "site": "s1"}
            np.testing.assert_allclose(unit(record.vector), unit(np.arange(1, DIM + 1)), atol=1e-5)
            assert second.retrieve(COLLECTION, [pid(2)]) == []  # the delete persisted too
        finally:
            second.close()

    def test_collection_metadata_persists_across_close_and_reopen(self, tmp_path):
        first = EdgeStore(tmp_path)
        first.ensure_collection(SPEC)
        first.update_collection_metadata(COLLECTION, {"model": {"sha256": "2" * 64}})
        first.close()
        second = EdgeStore(tmp_path)
        try:
            second.ensure_collection(SPEC)
            assert second.collection_metadata(COLLECTION) == {"model": {"sha256": "2" * 64}}
        finally:
            second.close()

    def test_second_store_on_open_path_fails(self, tmp_path):
        # A shard has a single writer: a second process (here: a second store) opening
        # it while the first holds it must fail, not share the write-ahead log.
        first = EdgeStore(tmp_path)
        first.ensure_collection(SPEC)
        try:
            with pytest.raises(RuntimeError, match="open in another process"):
                EdgeStore(tmp_path).ensure_collection(SPEC)
            # The first store is unaffected.
            first.upsert(COLLECTION, [rec(1, tenant_id="a")])
            assert first.count(COLLECTION, {}) == 1
        finally:
            first.close()

    def test_operations_before_ensure_collection_fail(self, tmp_path):
        store = EdgeStore(tmp_path)
        with pytest.raises(KeyError):
            store.upsert(COLLECTION, [rec(1, tenant_id="a")])


# --- FaceRepository --------------------------------------------------------------------

FACES, IDENTITIES = "faces_t", "identities_t"


@pytest.fixture
def repo(store: VectorStore) -> FaceRepository:
    repository = FaceRepository(store, FACES, IDENTITIES, DIM)
    repository.ensure_all()
    return repository


def face(name: str, vector: np.ndarray, **payload) -> GalleryFace:
    return GalleryFace(point_id("face", name), np.asarray(vector, dtype=np.float32), payload)


class TestFaceRepository:
    def test_ensure_all_creates_both_collections(self, repo, store):
        repo.ensure_all()  # idempotent
        for name, indexes in ((FACES, FACE_INDEXES), (IDENTITIES, IDENTITY_INDEXES)):
            info = store.describe(name)
            assert (info.dim, info.points) == (DIM, 0)
            assert set(indexes) <= keyword_indexes(store, name)
        stats = repo.stats()
        assert stats.engine == store.engine
        assert set(stats.collections) == {FACES, IDENTITIES}

    def test_save_then_get_identity(self, repo):
        template = np.arange(1, DIM + 1, dtype=np.float32)
        repo.save_identity("t1", "alice", template, [face("a1", basis(0))], {"name": "Alice"})
        identity = repo.get_identity("t1", "alice")
        assert identity is not None
        assert (identity.tenant_id, identity.identity_id) == ("t1", "alice")
        np.testing.assert_allclose(unit(identity.template), unit(template), atol=1e-5)
        assert identity.payload["tenant_id"] == "t1"
        assert identity.payload["identity_id"] == "alice"
        assert identity.payload["name"] == "Alice"
        assert isinstance(identity.payload["enrolled_at"], float)
        assert identities_of(repo, "t1") == 1

    def test_get_identity_is_tenant_scoped(self, repo):
        repo.save_identity("t1", "alice", basis(0), [], {})
        assert repo.get_identity("t2", "alice") is None
        assert repo.get_identity("t1", "bob") is None
        assert identities_of(repo, "t2") == 0

    def test_same_identity_id_in_two_tenants_is_two_identities(self, repo):
        repo.save_identity("t1", "alice", basis(0), [], {})
        repo.save_identity("t2", "alice", basis(1), [], {})
        np.testing.assert_allclose(unit(repo.get_identity("t1", "alice").template), basis(0), atol=1e-5)
        np.testing.assert_allclose(unit(repo.get_identity("t2", "alice").template), basis(1), atol=1e-5)

    def test_resave_replaces_template_and_enrollment_faces(self, repo, store):
        old = repo.save_identity("t1", "alice", basis(0), [face("old1", basis(0)), face("old2", basis(1))], {})
        # Another identity's enrollment and an ingested face tagged with alice must survive.
        repo.save_identity("t1", "bob", basis(2), [face("bob1", basis(2))], {})
        store.upsert(FACES, [Record(point_id("face", "cctv"), {"tenant_id": "t1", "identity_id": "alice",
                                                               "source": "ingest"}, basis(3))])

        new_faces = [face("new1", basis(4)), face("new2", basis(5)), face("new3", basis(6))]
        new = repo.save_identity("t1", "alice", basis(7), new_faces, {})
        assert new != old

        enrolled = store.scroll(FACES, {"tenant_id": "t1", "identity_id": "alice", "source": "enrollment"})
        assert ids_of(enrolled) == {enrollment_point_id(f.id, new) for f in new_faces}
        assert {r.payload["identity_gen"] for r in enrolled} == {new}
        assert store.retrieve(FACES, [enrollment_point_id(point_id("face", name), old) for name in ("old1", "old2")]) == []
        assert store.count(FACES, {"identity_id": "bob"}) == 1
        assert ids_of(store.retrieve(FACES, [point_id("face", "cctv")])) == {point_id("face", "cctv")}
        assert faces_of(repo, "t1") == 3 + 1 + 1
        np.testing.assert_allclose(unit(repo.get_identity("t1", "alice").template), basis(7), atol=1e-5)
        assert identities_of(repo, "t1") == 2

    def test_enrollment_faces_are_tagged(self, repo, store):
        generation = repo.save_identity("t1", "alice", basis(0), [face("a1", basis(0), bbox="1,2,3,4")], {})
        [record] = store.retrieve(FACES, [enrollment_point_id(point_id("face", "a1"), generation)])
        assert record.payload["tenant_id"] == "t1"
        assert record.payload["identity_id"] == "alice" and record.payload["identity_gen"] == generation
        assert repo.get_identity("t1", "alice").generation == generation
        assert record.payload["source"] == "enrollment"
        assert record.payload["bbox"] == "1,2,3,4"

    def test_search_faces_filters_by_tenant_and_identity(self, repo):
        # t2's face is the exact match for the query: only the tenant filter hides it.
        a1 = enrollment_point_id(point_id("face", "a1"),
                                 repo.save_identity("t1", "alice", basis(0), [face("a1", basis(0) + basis(1))], {}))
        b1 = enrollment_point_id(point_id("face", "b1"),
                                 repo.save_identity("t1", "bob", basis(1), [face("b1", basis(0) + 0.1 * basis(2))], {}))
        c1 = enrollment_point_id(point_id("face", "c1"),
                                 repo.save_identity("t2", "carol", basis(0), [face("c1", basis(0))], {}))

        t1_hits = repo.search_faces("t1", basis(0), limit=10, hnsw_ef=64)
        assert [h.id for h in t1_hits] == [b1, a1]
        assert all(h.payload["tenant_id"] == "t1" for h in t1_hits)

        alice_hits = repo.search_faces("t1", basis(0), limit=10, identity_id="alice")
        assert [h.id for h in alice_hits] == [a1]
        assert repo.search_faces("t2", basis(0), limit=10, identity_id="alice") == []
        assert [h.id for h in repo.search_faces("t2", basis(0), limit=10)] == [c1]
        assert repo.search_faces("t3", basis(0), limit=10) == []


class TestPointId:
    def test_deterministic(self):
        assert point_id("a", "b") == point_id("a", "b")
        assert identity_point_id("t", "i") == identity_point_id("t", "i")
        # A valid UUID string, which both engines accept as a point id.
        assert str(uuid.UUID(point_id("a", "b"))) == point_id("a", "b")

    @pytest.mark.parametrize("left, right", [
        (("a", "b"), ("a", "c")),
        (("a", "b"), ("b", "a")),
        (("ab", "c"), ("a", "bc")),      # same concatenation, different split
        (("a", ""), ("", "a")),
        (("a",), ("a", "")),
        (("1:a",), ("1", "a")),          # a part that looks like a length prefix
    ])
    def test_differs_when_parts_differ(self, left, right):
        assert point_id(*left) != point_id(*right)

    def test_identity_id_depends_on_tenant_and_identity(self):
        ids = {identity_point_id("t1", "x"), identity_point_id("t2", "x"), identity_point_id("t1", "y")}
        assert len(ids) == 3
