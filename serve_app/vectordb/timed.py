"""A `VectorStore` that reports the time of every call and the size of each collection.

Wraps the engine inside the FaceStore deployment, so "Qdrant latency" in the plan's
monitoring is the time of each storage operation by collection, whichever engine runs
it. After every write the collection's point count is read back (the engine's
collection info: a counter, not a scan) and reported.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from serve_app.vectordb.base import CollectionInfo, CollectionSpec, Filter, Hit, Record, VectorStore

T = TypeVar("T")


class StoreObserver(Protocol):
    def operation(self, operation: str, collection: str, seconds: float) -> None: ...

    def points(self, collection: str, count: int) -> None: ...


class TimedStore(VectorStore):
    def __init__(self, inner: VectorStore, observer: StoreObserver) -> None:
        self.inner = inner
        self.observer = observer
        self.engine = inner.engine

    @contextmanager
    def _timed(self, operation: str, collection: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.observer.operation(operation, collection, time.perf_counter() - started)

    def _call(self, operation: str, collection: str, call: Callable[[], T]) -> T:
        with self._timed(operation, collection):
            return call()

    def _write(self, operation: str, collection: str, call: Callable[[], None]) -> None:
        self._call(operation, collection, call)
        self.describe(collection)

    def ensure_collection(self, spec: CollectionSpec) -> None:
        self._write("ensure_collection", spec.name, lambda: self.inner.ensure_collection(spec))

    def describe(self, collection: str) -> CollectionInfo:
        info = self._call("describe", collection, lambda: self.inner.describe(collection))
        self.observer.points(collection, info.points)
        return info

    def upsert(self, collection: str, records: Sequence[Record], only_new: bool = False) -> None:
        self._write("upsert", collection, lambda: self.inner.upsert(collection, records, only_new))

    def retrieve(self, collection: str, ids: Sequence[str], with_vectors: bool = False) -> list[Record]:
        return self._call("retrieve", collection, lambda: self.inner.retrieve(collection, ids, with_vectors))

    def search(self, collection: str, vector: np.ndarray, where: Filter, limit: int,
               hnsw_ef: int | None = None, score_threshold: float | None = None) -> list[Hit]:
        return self._call("search", collection,
                          lambda: self.inner.search(collection, vector, where, limit, hnsw_ef, score_threshold))

    def scroll(self, collection: str, where: Filter, with_vectors: bool = False,
               page_size: int = 256) -> list[Record]:
        return self._call("scroll", collection, lambda: self.inner.scroll(collection, where, with_vectors, page_size))

    def count(self, collection: str, where: Filter) -> int:
        return self._call("count", collection, lambda: self.inner.count(collection, where))

    def set_payload(self, collection: str, ids: Sequence[str], payload: Mapping[str, Any],
                    where: Filter | None = None) -> None:
        self._call("set_payload", collection, lambda: self.inner.set_payload(collection, ids, payload, where))

    def delete_payload_keys(self, collection: str, ids: Sequence[str], keys: Sequence[str],
                            where: Filter | None = None) -> None:
        self._call("delete_payload_keys", collection,
                   lambda: self.inner.delete_payload_keys(collection, ids, keys, where))

    def exists(self, collection: str) -> bool:
        return self._call("exists", collection, lambda: self.inner.exists(collection))

    def snapshot(self, collections: Sequence[str], dest: Path) -> dict[str, str]:
        return self._call("snapshot", ",".join(collections), lambda: self.inner.snapshot(collections, dest))

    def restore(self, collection: str, source: Path) -> None:
        self._write("restore", collection, lambda: self.inner.restore(collection, source))

    def collection_metadata(self, collection: str) -> dict[str, Any]:
        return self._call("collection_metadata", collection, lambda: self.inner.collection_metadata(collection))

    def update_collection_metadata(self, collection: str, metadata: Mapping[str, Any]) -> None:
        self._call("update_collection_metadata", collection,
                   lambda: self.inner.update_collection_metadata(collection, metadata))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        self._write("delete", collection, lambda: self.inner.delete(collection, ids))

    def delete_where(self, collection: str, where: Filter) -> None:
        self._write("delete_where", collection, lambda: self.inner.delete_where(collection, where))

    def close(self) -> None:
        self.inner.close()
