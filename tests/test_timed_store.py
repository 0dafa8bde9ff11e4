"""TimedStore: every storage call reported by operation and collection, collection sizes
after each write, and the engine's answers passed through unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serve_app.vectordb.base import CollectionSpec, Record
from serve_app.vectordb.edge import EdgeStore
from serve_app.vectordb.timed import TimedStore

SPEC = CollectionSpec("faces_v1", 4, ("tenant_id",))


class Observer:
    def __init__(self) -> None:
        self.operations: list[tuple[str, str]] = []
        self.seconds: list[float] = []
        self.sizes: dict[str, int] = {}

    def operation(self, operation: str, collection: str, seconds: float) -> None:
        self.operations.append((operation, collection))
        self.seconds.append(seconds)

    def points(self, collection: str, count: int) -> None:
        self.sizes[collection] = count


def unit(values: list[float]) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def timed(tmp_path: Path) -> tuple[TimedStore, Observer]:
    observer = Observer()
    store = TimedStore(EdgeStore(tmp_path / "edge"), observer)
    store.ensure_collection(SPEC)
    yield store, observer
    store.close()


def test_writes_report_time_and_the_new_collection_size(timed: tuple[TimedStore, Observer]) -> None:
    store, observer = timed
    assert observer.sizes == {"faces_v1": 0}
    records = [Record(f"00000000-0000-0000-0000-00000000000{i}", {"tenant_id": "t"}, unit([1, i, 0, 0]))
               for i in range(3)]
    observer.operations.clear()
    store.upsert("faces_v1", records)
    assert observer.operations == [("upsert", "faces_v1"), ("describe", "faces_v1")]
    assert observer.sizes == {"faces_v1": 3}
    store.delete("faces_v1", [records[0].id])
    assert observer.sizes == {"faces_v1": 2}
    store.delete_where("faces_v1", {"tenant_id": "t"})
    assert observer.sizes == {"faces_v1": 0}
    assert all(seconds >= 0 for seconds in observer.seconds)


def test_reads_pass_answers_through_and_are_timed(timed: tuple[TimedStore, Observer]) -> None:
    store, observer = timed
    record = Record("00000000-0000-0000-0000-000000000001", {"tenant_id": "t"}, unit([1, 0, 0, 0]))
    store.upsert("faces_v1", [record])
    observer.operations.clear()
    hits = store.search("faces_v1", unit([1, 0, 0, 0]), {"tenant_id": "t"}, 5)
    assert [hit.id for hit in hits] == [record.id] and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert store.count("faces_v1", {"tenant_id": "t"}) == 1
    assert [r.id for r in store.retrieve("faces_v1", [record.id])] == [record.id]
    assert observer.operations == [("search", "faces_v1"), ("count", "faces_v1"), ("retrieve", "faces_v1")]


def test_a_failing_call_is_still_timed(timed: tuple[TimedStore, Observer]) -> None:
    store, observer = timed
    observer.operations.clear()
    with pytest.raises(Exception):  # noqa: B017 - whatever the engine raises for a missing collection
        store.search("no_such_collection", unit([1, 0, 0, 0]), {}, 1)
    assert observer.operations == [("search", "no_such_collection")]
