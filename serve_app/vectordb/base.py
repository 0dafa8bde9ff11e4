"""The storage interface the rest of the service sees.

Deliberately small: keyword-equality filters, cosine search, point CRUD and payload
updates. Both engines implement it and pass the same contract tests.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Keyword equality per field: a value, or a list meaning "any of these".
# A value of None means "the field is absent" (e.g. faces not tagged yet).
FilterValue = str | Sequence[str] | None
Filter = Mapping[str, FilterValue]


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    dim: int
    keyword_indexes: tuple[str, ...]


@dataclass(frozen=True)
class Record:
    id: str
    payload: dict[str, Any]
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Hit:
    id: str
    score: float  # cosine similarity in [-1, 1]
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    points: int
    dim: int
    keyword_indexes: tuple[str, ...]
    indexed_vectors: int = 0  # points under an HNSW index (the rest are searched by brute force)
    distance: str = "Cosine"
    # Every payload index, field -> type ("keyword", "integer", ...).
    indexes: Mapping[str, str] = field(default_factory=dict)


# The key of the model record in each collection's metadata (serve_app.vectordb.provenance).
MODEL_KEY = "face_pipeline_model"


@dataclass(frozen=True)
class IndexSettings:
    """How an engine indexes vectors: HNSW graph parameters, the segment size from which
    an HNSW index is built, and optional int8 scalar quantization (4x smaller vectors,
    searched first and rescored with the originals)."""

    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    # Filtered searches expected to touch fewer vectors than this (KB) scan them instead.
    full_scan_threshold_kb: int = 10_000
    # A segment larger than this (KB of vectors) gets an HNSW index when optimized.
    indexing_threshold_kb: int = 10_000
    int8: bool = False
    int8_quantile: float = 0.99
    # Searches on int8 vectors take this many times the candidates asked for and rescore
    # them with the float32 originals: at 1.0 recall@10 drops (`make bench-gallery`).
    int8_oversampling: float = 2.0


class VectorStore(abc.ABC):
    engine: str

    @abc.abstractmethod
    def ensure_collection(self, spec: CollectionSpec) -> None:
        """Create the collection and its payload indexes if missing; idempotent."""

    @abc.abstractmethod
    def describe(self, collection: str) -> CollectionInfo: ...

    @abc.abstractmethod
    def exists(self, collection: str) -> bool:
        """Whether the collection exists (without creating it)."""

    @abc.abstractmethod
    def snapshot(self, collections: Sequence[str], dest: Path) -> dict[str, str]:
        """A point-in-time copy of the collections (and their metadata) under `dest`; returns
        each one's file or folder name there. Reads go on meanwhile; writes to this store
        object wait."""

    @abc.abstractmethod
    def restore(self, collection: str, source: Path) -> None:
        """Put a collection back from what `snapshot` wrote (`source` is its file or folder)."""

    @abc.abstractmethod
    def upsert(self, collection: str, records: Sequence[Record], only_new: bool = False) -> None:
        """Insert or replace whole points (vector and payload); with `only_new`, a point
        whose id the collection holds already is left as it is (one atomic check per point)."""

    @abc.abstractmethod
    def retrieve(self, collection: str, ids: Sequence[str], with_vectors: bool = False) -> list[Record]: ...

    @abc.abstractmethod
    def search(
        self,
        collection: str,
        vector: np.ndarray,
        where: Filter,
        limit: int,
        hnsw_ef: int | None = None,
        score_threshold: float | None = None,
    ) -> list[Hit]: ...

    @abc.abstractmethod
    def scroll(self, collection: str, where: Filter, with_vectors: bool = False,
               page_size: int = 256) -> list[Record]:
        """Every point matching the filter."""

    @abc.abstractmethod
    def count(self, collection: str, where: Filter) -> int: ...

    @abc.abstractmethod
    def set_payload(self, collection: str, ids: Sequence[str], payload: Mapping[str, Any],
                    where: Filter | None = None) -> None:
        """Merge these keys into the payload of existing points.

        With `where`, only the points among `ids` that match it at the moment of the write
        change, and ids the collection does not hold are skipped: the filter is checked and
        the write applied as one operation of the engine, so naming the values the caller
        read makes it a compare-and-set."""

    @abc.abstractmethod
    def delete_payload_keys(self, collection: str, ids: Sequence[str], keys: Sequence[str],
                            where: Filter | None = None) -> None:
        """Remove these keys; `where` as for `set_payload`."""

    @abc.abstractmethod
    def delete(self, collection: str, ids: Sequence[str]) -> None: ...

    @abc.abstractmethod
    def delete_where(self, collection: str, where: Filter) -> None: ...

    @abc.abstractmethod
    def collection_metadata(self, collection: str) -> dict[str, Any]:
        """The collection's own record (not a point): e.g. which model wrote its vectors."""

    @abc.abstractmethod
    def update_collection_metadata(self, collection: str, metadata: Mapping[str, Any]) -> None:
        """Merge these top-level keys into the collection's record."""

    def close(self) -> None:  # noqa: B027 - optional for engines without resources
        """Release files and connections."""

    def optimize(self, collection: str) -> bool:
        """Build the vector index of what was loaded; True if anything changed. A Qdrant
        server optimizes in its own background threads, so the default does nothing."""
        return False


def record_from(point: Any, with_vectors: bool) -> Record:
    """A `Record` from either engine's point object (both have id, payload, vector)."""
    vector = np.asarray(point.vector, dtype=np.float32) if with_vectors and point.vector is not None else None
    return Record(id=str(point.id), payload=dict(point.payload or {}), vector=vector)


def as_list(vector: np.ndarray) -> list[float]:
    return np.asarray(vector, dtype=np.float32).reshape(-1).tolist()
