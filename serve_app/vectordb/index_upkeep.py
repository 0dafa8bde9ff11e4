"""Keeps the embedded store's HNSW index (and int8 vectors) up to date after bulk loads.

Qdrant Edge never indexes on its own: points written since the last build are searched
by brute force, which at a million gallery faces costs a tenant-wide scan per query. A
Qdrant server runs its own optimizers; this is the embedded engine's counterpart.

One daemon thread polls each collection's size. When enough points are unindexed and
writes have paused for a while (a bulk load has finished), or the unindexed part has
grown as large as the indexed one (a crawler that never pauses), it calls
`EdgeStore.rebuild_index`, which builds in a child process and swaps the result in
without holding back answers or writes. One rebuild at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from serve_app.config import Settings
from serve_app.gauge_refresh import Periodic
from serve_app.vectordb.base import CollectionInfo, VectorStore

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class UpkeepPolicy:
    # Unindexed points that justify a rebuild (0: never rebuild).
    min_new_points: int = 20_000
    # How long the collection's size must have stood still: a bulk load is over.
    quiet_s: float = 60.0

    def due(self, info: CollectionInfo, quiet_for_s: float) -> bool:
        """Whether `info`'s collection should be re-indexed now."""
        unindexed = info.points - info.indexed_vectors
        if self.min_new_points <= 0 or unindexed < self.min_new_points:
            return False
        return quiet_for_s >= self.quiet_s or unindexed >= info.indexed_vectors


class IndexUpkeep:
    """Polls `describe` every `period_s` and calls `rebuild(collection)` when the policy says so."""

    def __init__(self, collections: Sequence[str], describe: Callable[[str], CollectionInfo],
                 rebuild: Callable[[str], bool], policy: UpkeepPolicy, period_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.collections = tuple(collections)
        self._describe = describe
        self._rebuild = rebuild
        self.policy = policy
        self._clock = clock
        # Collection -> (its size when last seen, when that size was first seen).
        self._seen: dict[str, tuple[int, float]] = {}
        # Collection -> its size at the last rebuild, done or failed: never twice for one
        # size (a failing build is not retried in a loop, nor one that left a few small
        # segments unindexed).
        self._attempted: dict[str, int] = {}
        self._poller = Periodic(self.tick, period_s, "index-upkeep")

    def start(self) -> IndexUpkeep:
        self._poller.start()
        return self

    def stop(self) -> None:
        self._poller.stop()

    def tick(self) -> list[str]:
        """One poll: rebuild what is due (in this thread); the collections rebuilt."""
        rebuilt = []
        for collection in self.collections:
            info = self._describe(collection)
            now = self._clock()
            size, since = self._seen.get(collection, (-1, now))
            if info.points != size:
                since = now
            self._seen[collection] = (info.points, since)
            if self._attempted.get(collection) == info.points or not self.policy.due(info, now - since):
                continue
            self._attempted[collection] = info.points
            logger.info("indexing %s in the background: %d of %d points unindexed",
                        collection, info.points - info.indexed_vectors, info.points)
            started = time.monotonic()
            if self._rebuild(collection):
                after = self._describe(collection)
                logger.info("indexed %s in %.0f s: %d of %d points under the index", collection,
                            time.monotonic() - started, after.indexed_vectors, after.points)
                rebuilt.append(collection)
            else:
                logger.error("indexing %s failed; brute-force search goes on until its size changes", collection)
        return rebuilt


def start_upkeep(store: VectorStore, collections: Sequence[str], settings: Settings) -> IndexUpkeep | None:
    """The upkeep of `store`'s collections, started, where the engine is the embedded one
    (possibly behind a wrapper with an `inner` engine) and EDGE_INDEX_MIN_NEW_POINTS > 0."""
    from serve_app.vectordb.edge import EdgeStore

    engine = getattr(store, "inner", store)
    if not isinstance(engine, EdgeStore) or settings.edge_index_min_new_points <= 0:
        return None
    policy = UpkeepPolicy(settings.edge_index_min_new_points, settings.edge_index_quiet_s)
    return IndexUpkeep(collections, store.describe, engine.rebuild_index, policy).start()
