"""Qdrant Edge's vector index: HNSW and int8 quantization settings, and the index rebuild
in a child process while the store keeps answering and writing."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from serve_app.vectordb.base import CollectionSpec, IndexSettings, Record
from serve_app.vectordb.edge import EdgeStore

DIM = 32
SPEC = CollectionSpec("faces", DIM, ("tenant_id",))
# Small thresholds so that a few thousand points get an HNSW index and searches use it.
INDEX = IndexSettings(hnsw_m=8, hnsw_ef_construct=32, full_scan_threshold_kb=1, indexing_threshold_kb=50,
                      int8=True)


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def records(vectors: np.ndarray, start: int = 0) -> list[Record]:
    return [Record(f"00000000-0000-0000-0000-{start + n:012d}", {"tenant_id": f"t{(start + n) % 2}"}, v)
            for n, v in enumerate(vectors)]


@pytest.fixture
def loaded(tmp_path: Path) -> tuple[EdgeStore, np.ndarray]:
    store = EdgeStore(tmp_path, INDEX)
    store.ensure_collection(SPEC)
    vectors = unit_rows(np.random.default_rng(0), 3000)
    store.upsert("faces", records(vectors))
    yield store, vectors
    store.close()


def nearest_is_itself(store: EdgeStore, vectors: np.ndarray, picks: range) -> bool:
    rng = np.random.default_rng(1)
    for n in picks:
        probe = vectors[n] + 0.05 * rng.standard_normal(DIM).astype(np.float32)
        [hit] = store.search("faces", probe, {"tenant_id": f"t{n % 2}"}, 1, hnsw_ef=64)
        if hit.id != records(vectors[n:n + 1], n)[0].id:
            return False
    return True


def test_no_index_until_optimized_then_quantized_hnsw_finds_the_nearest(loaded):
    store, vectors = loaded
    assert store.describe("faces").indexed_vectors == 0
    assert store.optimize("faces")
    info = store.describe("faces")
    assert info.points == 3000 and info.indexed_vectors > 0
    assert nearest_is_itself(store, vectors, range(0, 3000, 150))


def test_rebuild_index_in_a_child_keeps_serving_and_replays_the_writes_made_meanwhile(loaded, tmp_path):
    store, vectors = loaded
    outcome: list[bool] = []
    builder = threading.Thread(target=lambda: outcome.append(store.rebuild_index("faces")))
    extra = unit_rows(np.random.default_rng(2), 400)
    written = searched = 0
    builder.start()
    while builder.is_alive() and written < len(extra):
        store.upsert("faces", records(extra[written:written + 1], 3000 + written))
        written += 1
        assert store.search("faces", vectors[0], {"tenant_id": "t0"}, 1)[0].score > 0.99
        searched += 1
    store.delete("faces", [records(vectors[:1])[0].id])
    builder.join()
    assert outcome == [True]
    assert written > 0 and searched > 0  # the store answered while the child built
    info = store.describe("faces")
    assert info.indexed_vectors > 0
    assert info.points == 3000 + written - 1
    assert store.retrieve("faces", [records(extra[written - 1:written], 3000 + written - 1)[0].id])
    assert store.retrieve("faces", [records(vectors[:1])[0].id]) == []
    assert nearest_is_itself(store, vectors, range(1, 3000, 150))
    assert not list(tmp_path.glob(".faces.*"))  # no copy left behind
    store.close()
    reopened = EdgeStore(tmp_path, INDEX)  # the swapped-in shard is the one on disk
    reopened.ensure_collection(SPEC)
    assert reopened.describe("faces").points == 3000 + written - 1
    reopened.close()


def test_a_swap_interrupted_by_a_crash_is_undone_on_open(tmp_path):
    store = EdgeStore(tmp_path)
    store.ensure_collection(SPEC)
    store.upsert("faces", records(unit_rows(np.random.default_rng(0), 10)))
    store.close()
    # The crash came after the live shard was moved aside, before the copy took its place.
    (tmp_path / "faces").rename(tmp_path / ".faces.old")
    (tmp_path / ".faces.indexing").mkdir()
    reopened = EdgeStore(tmp_path)
    reopened.ensure_collection(SPEC)
    assert reopened.describe("faces").points == 10
    assert not list(tmp_path.glob(".faces.*"))
    reopened.close()
