"""The embedded store's index upkeep: when a rebuild is due, and one on a real Edge store."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from serve_app.config import Settings
from serve_app.vectordb.base import CollectionInfo
from serve_app.vectordb.edge import EdgeStore
from serve_app.vectordb.index_upkeep import IndexUpkeep, UpkeepPolicy, start_upkeep
from tests.test_edge_index import INDEX, SPEC, records, unit_rows

POLICY = UpkeepPolicy(min_new_points=100, quiet_s=60)


def info(points: int, indexed: int) -> CollectionInfo:
    return CollectionInfo("faces", points, 8, (), indexed_vectors=indexed)


def test_a_rebuild_waits_for_enough_new_points_and_a_quiet_spell() -> None:
    assert not POLICY.due(info(99, 0), quiet_for_s=3600)  # too few unindexed
    assert not POLICY.due(info(1100, 1000), quiet_for_s=59)  # writes still coming
    assert POLICY.due(info(1100, 1000), quiet_for_s=60)
    # A load that never pauses: rebuilt once the unindexed part is as large as the index.
    assert not POLICY.due(info(1999, 1000), quiet_for_s=0)
    assert POLICY.due(info(2000, 1000), quiet_for_s=0)
    assert not UpkeepPolicy(min_new_points=0).due(info(10**6, 0), quiet_for_s=3600)  # off


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_tick_rebuilds_once_the_size_stands_still_and_never_twice_for_one_size() -> None:
    sizes = {"faces": info(1500, 1000), "identities": info(10, 0)}
    calls: list[str] = []
    outcome = [False]
    clock = Clock()
    upkeep = IndexUpkeep(["faces", "identities"], sizes.__getitem__,
                         lambda name: calls.append(name) or outcome[0], POLICY, clock=clock)
    assert upkeep.tick() == []  # first sight of this size
    clock.now = 30
    sizes["faces"] = info(1800, 1000)  # still loading
    assert upkeep.tick() == []
    clock.now = 89
    assert upkeep.tick() == [] and calls == []  # 59 s quiet
    clock.now = 90
    assert upkeep.tick() == [] and calls == ["faces"]  # due, and the build failed
    clock.now = 1000
    assert upkeep.tick() == [] and calls == ["faces"]  # a failed size is not retried
    sizes["faces"] = info(1900, 1000)
    outcome[0] = True
    assert upkeep.tick() == []  # grown: a new quiet spell starts
    clock.now = 1060
    assert upkeep.tick() == ["faces"] and calls == ["faces", "faces"]  # grown, quiet again
    sizes["faces"] = info(5000, 1900)  # a load that does not pause: due at once
    assert upkeep.tick() == ["faces"] and calls == ["faces"] * 3


def test_start_upkeep_only_for_the_embedded_engine_and_when_on(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path)
    # Defaults only: a developer's .env must not decide the outcome.
    defaults = Settings(_env_file=None)
    try:
        assert start_upkeep(store, ["faces"], defaults.model_copy(update={"edge_index_min_new_points": 0})) is None
        assert start_upkeep(object(), ["faces"], defaults) is None  # type: ignore[arg-type]
        upkeep = start_upkeep(store, ["faces"], defaults)
        assert upkeep is not None
        upkeep.stop()
    finally:
        store.close()


def test_upkeep_indexes_a_loaded_edge_collection_and_it_still_answers(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path, INDEX)
    try:
        store.ensure_collection(SPEC)
        vectors = unit_rows(np.random.default_rng(0), 3000)
        store.upsert("faces", records(vectors))
        assert store.describe("faces").indexed_vectors == 0
        upkeep = IndexUpkeep(["faces"], store.describe, store.rebuild_index, UpkeepPolicy(min_new_points=1000))
        assert upkeep.tick() == ["faces"]  # nothing indexed yet: no need to wait
        assert upkeep.tick() == []
        after = store.describe("faces")
        assert after.points == 3000 and after.indexed_vectors >= 2000
        [hit] = store.search("faces", vectors[7], {"tenant_id": "t1"}, 1, hnsw_ef=64)
        assert hit.id == records(vectors[7:8], 7)[0].id
    finally:
        store.close()
