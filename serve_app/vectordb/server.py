"""Qdrant server (single node or distributed) through `qdrant-client`.

Used when QDRANT_URL is set. Tests run the same code on `QdrantClient(":memory:")`,
qdrant-client's local mode, which speaks the same API (without payload indexes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from qdrant_client import QdrantClient, models

from serve_app.vectordb.base import (
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
        return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))
    if isinstance(value, str):
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))
    return models.FieldCondition(key=key, match=models.MatchAny(any=list(value)))


def _filter(where: Filter) -> models.Filter | None:
    if not where:
        return None
    return models.Filter(must=[_condition(key, value) for key, value in where.items()])


def _selector(ids: Sequence[str], where: Filter | None) -> models.PointIdsList | models.Filter:
    """`ids`, or with `where` the points among them that match it (missing ids match nothing)."""
    if where is None:
        return models.PointIdsList(points=list(ids))
    return models.Filter(must=[models.HasIdCondition(has_id=list(ids)),
                               *(_condition(k, v) for k, v in where.items())])


# Conditional writes are compare-and-set only if every replica of a shard applies them in
# the same order: "strong" sends writes through the shard's permanent leader (the default,
# "weak", may reorder them across replicas). Without replication it changes nothing.
_ORDERED = models.WriteOrdering.STRONG
# The reads that decide (does this identity's generation still hold, which copy of a photo
# came first) must see every acknowledged write: ask a majority of a shard's replicas
# (pair with write_consistency_factor >= a majority on replicated collections).
_DECIDING_READ = models.ReadConsistencyType.MAJORITY


class QdrantServerStore(VectorStore):
    engine = "qdrant-server"

    def __init__(self, client: QdrantClient, url: str | None = None, api_key: str | None = None) -> None:
        self.client = client
        # Snapshot files travel over Qdrant's REST API, which qdrant-client does not wrap.
        self.url = url
        self.api_key = api_key

    @classmethod
    def connect(cls, url: str, api_key: str | None, timeout_s: float) -> "QdrantServerStore":
        return cls(QdrantClient(url=url, api_key=api_key or None, timeout=int(max(1, timeout_s))), url, api_key)

    def ensure_collection(self, spec: CollectionSpec) -> None:
        if not self.client.collection_exists(spec.name):
            try:
                self.client.create_collection(
                    spec.name,
                    vectors_config=models.VectorParams(size=spec.dim, distance=models.Distance.COSINE),
                )
            except Exception:
                # Another replica may have created it between the check and the create.
                if not self.client.collection_exists(spec.name):
                    raise
        info = self.describe(spec.name)
        if info.dim != spec.dim:
            raise ValueError(f"collection {spec.name} holds {info.dim}-d vectors, expected {spec.dim}")
        for field_name in spec.keyword_indexes:
            if field_name not in info.keyword_indexes:
                self.client.create_payload_index(
                    spec.name, field_name, field_schema=models.PayloadSchemaType.KEYWORD, wait=True
                )

    def describe(self, collection: str) -> CollectionInfo:
        info = self.client.get_collection(collection)
        vectors = info.config.params.vectors
        dim = vectors.size if isinstance(vectors, models.VectorParams) else 0
        schema = info.payload_schema or {}
        keywords = tuple(sorted(
            name for name, index in schema.items() if index.data_type == models.PayloadSchemaType.KEYWORD
        ))
        indexes = {name: str(getattr(index.data_type, "value", index.data_type)).lower()
                   for name, index in sorted(schema.items())}
        distance = vectors.distance.value if isinstance(vectors, models.VectorParams) else "?"
        return CollectionInfo(collection, int(info.points_count or 0), int(dim), keywords,
                              distance=str(distance), indexes=indexes)

    def exists(self, collection: str) -> bool:
        return bool(self.client.collection_exists(collection))

    def _rest(self) -> httpx.Client:
        if not self.url:
            raise RuntimeError("snapshots need the Qdrant server's URL (QDRANT_URL)")
        headers = {"api-key": self.api_key} if self.api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=600)

    def snapshot(self, collections: Sequence[str], dest: Path) -> dict[str, str]:
        """The server's snapshot API, one collection after the other (the server takes
        each one consistently and keeps serving; the pair is not one atomic cut)."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        names: dict[str, str] = {}
        with self._rest() as rest:
            for collection in collections:
                made = self.client.create_snapshot(collection, wait=True)
                if made is None:
                    raise RuntimeError(f"Qdrant made no snapshot of {collection}")
                target = dest / f"{collection}.snapshot"
                with rest.stream("GET", f"/collections/{collection}/snapshots/{made.name}") as response:
                    response.raise_for_status()
                    with open(target, "wb") as out:
                        for chunk in response.iter_bytes():
                            out.write(chunk)
                self.client.delete_snapshot(collection, made.name, wait=True)
                names[collection] = target.name
        return names

    def restore(self, collection: str, source: Path) -> None:
        """Upload a snapshot file; the server recreates the collection from it."""
        with self._rest() as rest, open(source, "rb") as snapshot:
            response = rest.post(f"/collections/{collection}/snapshots/upload", params={"priority": "snapshot"},
                                 files={"snapshot": (Path(source).name, snapshot)})
            response.raise_for_status()

    def upsert(self, collection: str, records: Sequence[Record], only_new: bool = False) -> None:
        if not records:
            return
        points = [models.PointStruct(id=r.id, vector=as_list(r.vector), payload=dict(r.payload))  # type: ignore[arg-type]
                  for r in records]
        self.client.upsert(collection, points=points, wait=True, ordering=_ORDERED,
                           update_mode=models.UpdateMode.INSERT_ONLY if only_new else None)

    def retrieve(self, collection: str, ids: Sequence[str], with_vectors: bool = False) -> list[Record]:
        if not ids:
            return []
        found = self.client.retrieve(collection, list(ids), with_payload=True, with_vectors=with_vectors,
                                     consistency=_DECIDING_READ)
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
        response = self.client.query_points(
            collection,
            query=as_list(vector),
            query_filter=_filter(where),
            limit=limit,
            with_payload=True,
            score_threshold=score_threshold,
            search_params=models.SearchParams(hnsw_ef=hnsw_ef) if hnsw_ef else None,
        )
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in response.points]

    def scroll(self, collection: str, where: Filter, with_vectors: bool = False,
               page_size: int = 256) -> list[Record]:
        records: list[Record] = []
        offset = None
        while True:
            page, offset = self.client.scroll(collection, scroll_filter=_filter(where), limit=page_size,
                                              offset=offset, with_payload=True, with_vectors=with_vectors,
                                              consistency=_DECIDING_READ)
            records.extend(record_from(point, with_vectors) for point in page)
            if offset is None:
                return records

    def count(self, collection: str, where: Filter) -> int:
        return int(self.client.count(collection, count_filter=_filter(where), exact=True).count)

    def set_payload(self, collection: str, ids: Sequence[str], payload: Mapping[str, Any],
                    where: Filter | None = None) -> None:
        if ids:
            self.client.set_payload(collection, payload=dict(payload), points=_selector(ids, where), wait=True,
                                    ordering=_ORDERED)

    def delete_payload_keys(self, collection: str, ids: Sequence[str], keys: Sequence[str],
                            where: Filter | None = None) -> None:
        if ids:
            self.client.delete_payload(collection, keys=list(keys), points=_selector(ids, where), wait=True,
                                       ordering=_ORDERED)

    def delete(self, collection: str, ids: Sequence[str]) -> None:
        if ids:
            self.client.delete(collection, points_selector=models.PointIdsList(points=list(ids)), wait=True,
                               ordering=_ORDERED)

    def delete_where(self, collection: str, where: Filter) -> None:
        flt = _filter(where)
        if flt is None:
            raise ValueError("refusing to delete a whole collection without a filter")
        self.client.delete(collection, points_selector=models.FilterSelector(filter=flt), wait=True,
                           ordering=_ORDERED)

    def collection_metadata(self, collection: str) -> dict[str, Any]:
        return dict(self.client.get_collection(collection).config.metadata or {})

    def update_collection_metadata(self, collection: str, metadata: Mapping[str, Any]) -> None:
        self.client.update_collection(collection, metadata=dict(metadata))

    def close(self) -> None:
        self.client.close()
