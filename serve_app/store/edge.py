"""Embedded engine: Qdrant Edge, Qdrant's own storage engine running in-process.

One shard directory per collection under the root path, each with its write-ahead log,
so an acknowledged write survives a crash. A shard can be opened by one process only:
the FaceStore deployment therefore runs a single replica in this mode.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from serve_app.store.base import (
    CollectionInfo,
    CollectionSpec,
    Filter,
    Hit,
    Record,
    VectorStore,
    as_list,
    record_from,
)


def _condition(key: str, value: Any) -> Any:
    if value is None:
        return qe.FieldCondition(key=key, is_empty=True)
    if isinstance(value, str):
        return qe.FieldCondition(key=key, match=qe.MatchValue(value))
    return qe.FieldCondition(key=key, match=qe.MatchAny(list(value)))


def _filter(where: Filter) -> qe.Filter | None:
    if not where:
        return None
    return qe.Filter(must=[_condition(key, value) for key, value in where.items()])


def _among(ids: Sequence[str], where: Filter) -> qe.Filter:
    """The points among `ids` that match `where` (missing ids simply match nothing)."""
    return qe.Filter(must=[qe.HasIdCondition(set(ids)), *(_condition(k, v) for k, v in where.items())])


class EdgeStore(VectorStore):
    engine = "qdrant-edge"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, int] = {}
        # Writes to one shard are serialised so that read-modify-write sequences in the
        # layers above (template replacement, re-tagging) see a consistent order.
        self._lock = threading.RLock()

    def _shard(self, collection: str) -> qe.EdgeShard:
        try:
            return self._shards[collection]
        except KeyError:
            raise KeyError(f"collection {collection!r} is not open; call ensure_collection") from None

    def ensure_collection(self, spec: CollectionSpec) -> None:
        with self._lock:
            if spec.name not in self._shards:
                path = self.root / spec.name
                config = qe.EdgeConfig(vectors=qe.EdgeVectorParams(size=spec.dim, distance=qe.Distance.Cosine))
                if (path / "edge_config.json").exists():
                    # Passing the config makes Edge check the stored vectors agree with it.
                    try:
                        shard = qe.EdgeShard.load(str(path), config)
                    except Exception as error:
                        if "WAL" in str(error) or "WouldBlock" in str(error):
                            raise RuntimeError(
                                f"{path} is open in another process (only one may open an embedded "
                                "shard: stop the running service, or use a Qdrant server)"
                            ) from error
                        raise ValueError(f"cannot open {path} as {spec.dim}-d cosine vectors: {error}") from error
                else:
                    shard = qe.EdgeShard.create(str(path), config)
                self._shards[spec.name] = shard
                self._dims[spec.name] = spec.dim
            if self._dims[spec.name] != spec.dim:
                raise ValueError(f"collection {spec.name} holds {self._dims[spec.name]}-d vectors, "
                                 f"expected {spec.dim}")
            shard = self._shards[spec.name]
            existing = shard.info().payload_schema
            for field_name in spec.keyword_indexes:
                if field_name not in existing:
                    shard.update(qe.UpdateOperation.create_field_index(field_name, qe.PayloadSchemaType.Keyword))

    def describe(self, collection: str) -> CollectionInfo:
        info = self._shard(collection).info()
        keywords = tuple(sorted(name for name, index in info.payload_schema.items()
                                if index.data_type == qe.PayloadSchemaType.Keyword))
        return CollectionInfo(collection, info.points_count, self._dims[collection], keywords)

    def upsert(self, collection: str, records: Sequence[Record], only_new: bool = False) -> None:
        if not records:
            return
        points = [qe.Point(r.id, as_list(r.vector), dict(r.payload)) for r in records]  # type: ignore[arg-type]
        mode = qe.UpdateMode.InsertOnly if only_new else None
        with self._lock:
            self._shard(collection).update(qe.UpdateOperation.upsert_points(points, update_mode=mode))

    def retrieve(self, collection: str, ids: Sequence[str], with_vectors: bool = False) -> list[Record]:
        if not ids:
            return []
        found = self._shard(collection).retrieve(list(ids), True, with_vectors)
        return [record_from(point, with_vectors) for point in found]

    def search(
        self,
        collection: str,
        vector: np.ndarray,
        where: Filter,
        limit: int,
        hnsw_ef: int | None = None,
        score_threshold: float | None = None,
    ) -> list[Hit]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(as_list(vector)),
            filter=_filter(where),
            with_payload=True,
            with_vector=False,
            score_threshold=score_threshold,
            params=qe.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef else None,
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {}))
                for p in self._shard(collection).query(request)]

    def scroll(self, collection: str, where: Filter, with_vectors: bool = False,
               page_size: int = 256) -> list[Record]:
        shard = self._shard(collection)
        records: list[Record] = []
        offset = None
        while True:
            page, offset = shard.scroll(qe.ScrollRequest(offset=offset, limit=page_size, filter=_filter(where),
                                                         with_payload=True, with_vector=with_vectors))
            records.extend(record_from(point, with_vectors) for point in page)
            if offset is None:
                return records

    def count(self, collection: str, where: Filter) -> int:
        return int(self._shard(collection).count(qe.CountRequest(exact=True, filter=_filter(where))))

    def _write(self, collection: str, operation: Any) -> None:
        with self._lock:
            self._shard(collection).update(operation)

    def set_payload(self, collection: str, ids: Sequence[str], payload: Mapping[str, Any],
                    where: Filter | None = None) -> None:
        if not ids:
            return
        if where is None:
            self._write(collection, qe.UpdateOperation.set_payload(list(ids), dict(payload)))
        else:
            self._write(collection, qe.UpdateOperation.set_payload_by_filter(_among(ids, where), dict(payload)))

    def delete_payload_keys(self, collection: str, ids: Sequence[str], keys: Sequence[str],
                            where: Filter | None = None) -> None:
        if not ids:
            return
        if where is None:
            self._write(collection, qe.UpdateOperation.delete_payload(list(ids), list(keys)))
        else:
            self._write(collection, qe.UpdateOperation.delete_payload_by_filter(_among(ids, where), list(keys)))

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self._write(collection, qe.UpdateOperation.delete_points(list(ids)))

    def delete_where(self, collection: str, where: Filter) -> None:
        flt = _filter(where)
        if flt is None:
            raise ValueError("refusing to delete a whole collection without a filter")
        self._write(collection, qe.UpdateOperation.delete_points_by_filter(flt))

    def _metadata_path(self, collection: str) -> Path:
        # Beside the shard directory, which belongs to Edge.
        return self.root / f"{collection}.metadata.json"

    def collection_metadata(self, collection: str) -> dict[str, Any]:
        self._shard(collection)
        path = self._metadata_path(collection)
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def update_collection_metadata(self, collection: str, metadata: Mapping[str, Any]) -> None:
        with self._lock:
            merged = {**self.collection_metadata(collection), **metadata}
            path = self._metadata_path(collection)
            # Written whole, then renamed: a crash leaves the old record or the new one.
            partial = path.with_suffix(".partial")
            partial.write_text(json.dumps(merged, sort_keys=True))
            os.replace(partial, path)

    def close(self) -> None:
        with self._lock:
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()
