"""Embedded engine: Qdrant Edge, Qdrant's own storage engine running in-process.

One shard directory per collection under the root path, each with its write-ahead log,
so an acknowledged write survives a crash. A shard can be opened by one process only:
the FaceStore deployment therefore runs a single replica in this mode.

Edge builds no HNSW index by itself: `optimize` builds it in this process, and Edge 0.9
holds the GIL while it does (measured: a 1 ms ticker thread ran twice in a 33 s
optimize), which would stop every other request of the process. `rebuild_index` builds
it on a copy of the shard in a child process instead, while this one keeps answering
and writing, then swaps the indexed copy in and replays the writes made meanwhile.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from serve_app.vectordb.base import (
    CollectionInfo,
    CollectionSpec,
    Filter,
    Hit,
    IndexSettings,
    Record,
    VectorStore,
    as_list,
    record_from,
)

logger = logging.getLogger(__name__)


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


def copy_sparse(src: str, dst: str) -> str:
    """Copy a file's data, keeping its holes: a shard preallocates its WAL segments and
    mmap files (about 150 MB apparent for a handful of points, under 1 MB on disk), and a
    dense copy would cost that much disk and that much time with writes paused."""
    with open(src, "rb") as source, open(dst, "wb") as target:
        fd_in, fd_out = source.fileno(), target.fileno()
        size = os.fstat(fd_in).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd_in, offset, os.SEEK_DATA)
            except OSError as error:
                if error.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = os.lseek(fd_in, start, os.SEEK_HOLE)
            while start < end:
                chunk = os.pread(fd_in, min(end - start, 1 << 20), start)
                if not chunk:
                    break
                os.pwrite(fd_out, chunk, start)
                start += len(chunk)
            offset = end
        os.ftruncate(fd_out, size)
    shutil.copystat(src, dst)
    return dst


class StoreLocked(RuntimeError):
    """The shard is open in another process: a running service holds the embedded store."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is open in another process (only one may open an embedded shard: "
                         "stop the running service, talk to it over HTTP, or use a Qdrant server)")
        self.path = path
def _among(ids: Sequence[str], where: Filter) -> qe.Filter:
    """The points among `ids` that match `where` (missing ids simply match nothing)."""
    return qe.Filter(must=[qe.HasIdCondition(set(ids)), *(_condition(k, v) for k, v in where.items())])


def edge_config(dim: int, index: IndexSettings | None) -> qe.EdgeConfig:
    """Cosine vectors of `dim`; with `index`, its HNSW, indexing and quantization settings."""
    vectors = qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine)
    if index is None:
        return qe.EdgeConfig(vectors=vectors)
    quantization = qe.ScalarQuantizationConfig(qe.ScalarType.Int8, quantile=index.int8_quantile,
                                               memory=qe.Memory.Pinned) if index.int8 else None
    return qe.EdgeConfig(
        vectors=vectors,
        hnsw_config=qe.HnswIndexConfig(m=index.hnsw_m, ef_construct=index.hnsw_ef_construct,
                                       full_scan_threshold=index.full_scan_threshold_kb),
        quantization_config=quantization,
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=index.indexing_threshold_kb),
    )


class _ReadGate:
    """Reads run concurrently; a shard swap waits for them to finish and holds new ones
    back, so no read ever uses a shard that is being closed."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._readers = 0
        self._swapping = False

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._swapping)
            self._readers += 1
        try:
            yield
        finally:
            with self._changed:
                self._readers -= 1
                self._changed.notify_all()

    @contextmanager
    def swap(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: not self._swapping)
            self._swapping = True
            self._changed.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            with self._changed:
                self._swapping = False
                self._changed.notify_all()


class EdgeStore(VectorStore):
    engine = "qdrant-edge"

    def __init__(self, root: Path, index: IndexSettings | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.index = index
        self._shards: dict[str, qe.EdgeShard] = {}
        self._dims: dict[str, int] = {}
        # Writes to one shard are serialised so that read-modify-write sequences in the
        # layers above (template replacement, re-tagging) see a consistent order.
        self._lock = threading.RLock()
        self._gate = _ReadGate()
        # Collection -> the writes made since its copy for `rebuild_index` was taken.
        self._journal: dict[str, list[Any]] = {}

    def _shard(self, collection: str) -> qe.EdgeShard:
        try:
            return self._shards[collection]
        except KeyError:
            pass
        # A collection on disk that this object has not opened yet (e.g. an operator's
        # read-only look): open it with the vector size it was created with.
        config = self._stored_config(collection)
        if config is None:
            raise KeyError(f"collection {collection!r} does not exist; call ensure_collection")
        with self._lock:
            if collection not in self._shards:
                self._open(collection, int(config["vectors"][""]["size"]))
        return self._shards[collection]

    def _stored_config(self, collection: str) -> dict[str, Any] | None:
        path = self.root / collection / "edge_config.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _open(self, name: str, dim: int) -> None:
        self._recover_swap(name)
        path = self.root / name
        config = edge_config(dim, self.index)
        if (path / "edge_config.json").exists():
            # Passing the config makes Edge check the stored vectors agree with it.
            try:
                shard = qe.EdgeShard.load(str(path), config)
            except Exception as error:
                if "WAL" in str(error) or "WouldBlock" in str(error):
                    raise StoreLocked(path) from error
                raise ValueError(f"cannot open {path} as {dim}-d cosine vectors: {error}") from error
        else:
            shard = qe.EdgeShard.create(str(path), config)
        self._shards[name] = shard
        self._dims[name] = dim

    def _recover_swap(self, name: str) -> None:
        """Undo a `rebuild_index` swap that a crash interrupted: the old shard comes back
        if the new one never made it into place; an unfinished copy is dropped."""
        path, old = self.root / name, self.root / f".{name}.old"
        if old.exists():
            if (path / "edge_config.json").exists():
                shutil.rmtree(old)
            else:
                shutil.rmtree(path, ignore_errors=True)
                old.rename(path)
        shutil.rmtree(self.root / f".{name}.indexing", ignore_errors=True)

    def ensure_collection(self, spec: CollectionSpec) -> None:
        with self._lock:
            if spec.name not in self._shards:
                self._open(spec.name, spec.dim)
            if self._dims[spec.name] != spec.dim:
                raise ValueError(f"collection {spec.name} holds {self._dims[spec.name]}-d vectors, "
                                 f"expected {spec.dim}")
            shard = self._shards[spec.name]
            existing = shard.info().payload_schema
            for field_name in spec.keyword_indexes:
                if field_name not in existing:
                    shard.update(qe.UpdateOperation.create_field_index(field_name, qe.PayloadSchemaType.Keyword))

    def describe(self, collection: str) -> CollectionInfo:
        with self._gate.read():
            info = self._shard(collection).info()
        keywords = tuple(sorted(name for name, index in info.payload_schema.items()
                                if index.data_type == qe.PayloadSchemaType.Keyword))
        indexes = {name: str(index.data_type).rsplit(".", 1)[-1].lower()
                   for name, index in sorted(info.payload_schema.items())}
        stored = self._stored_config(collection) or {}
        distance = str(stored.get("vectors", {}).get("", {}).get("distance", "Cosine"))
        return CollectionInfo(collection, info.points_count, self._dims[collection], keywords,
                              info.indexed_vectors_count, distance, indexes)

    def exists(self, collection: str) -> bool:
        return collection in self._shards or self._stored_config(collection) is not None

    def snapshot(self, collections: Sequence[str], dest: Path) -> dict[str, str]:
        """Flush and copy the shard folders while holding the write lock: writes wait
        (for the whole set, so the collections agree with each other), reads go on."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        names: dict[str, str] = {}
        with self._lock:
            for collection in collections:
                self._shard(collection).flush()
            for collection in collections:
                shutil.copytree(self.root / collection, dest / collection, copy_function=copy_sparse)
                if self._metadata_path(collection).is_file():
                    shutil.copy2(self._metadata_path(collection), dest / self._metadata_path(collection).name)
                names[collection] = collection
        return names

    def restore(self, collection: str, source: Path) -> None:
        """Copy a snapshot folder in as a collection this store does not have yet."""
        source = Path(source)
        with self._lock:
            if self.exists(collection):
                raise FileExistsError(f"collection {collection} already exists in {self.root}; "
                                      "restore into a fresh data directory")
            shutil.copytree(source, self.root / collection, copy_function=copy_sparse)
            metadata = source.parent / self._metadata_path(collection).name
            if metadata.is_file():
                shutil.copy2(metadata, self._metadata_path(collection))

    def upsert(self, collection: str, records: Sequence[Record], only_new: bool = False) -> None:
        if not records:
            return
        points = [qe.Point(r.id, as_list(r.vector), dict(r.payload)) for r in records]  # type: ignore[arg-type]
        mode = qe.UpdateMode.InsertOnly if only_new else None
        self._write(collection, qe.UpdateOperation.upsert_points(points, update_mode=mode))

    def retrieve(self, collection: str, ids: Sequence[str], with_vectors: bool = False) -> list[Record]:
        if not ids:
            return []
        with self._gate.read():
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
            params=self._search_params(hnsw_ef),
        )
        with self._gate.read():
            found = self._shard(collection).query(request)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in found]

    def _search_params(self, hnsw_ef: int | None) -> qe.SearchParams:
        # Rescoring asked for whatever this store's settings say: segments quantized by an
        # earlier build keep their int8 vectors until rebuilt, and would otherwise be
        # searched on those alone.
        oversampling = (self.index or IndexSettings()).int8_oversampling
        return qe.SearchParams(hnsw_ef=hnsw_ef or None,
                               quantization=qe.QuantizationSearchParams(rescore=True, oversampling=oversampling))

    def scroll(self, collection: str, where: Filter, with_vectors: bool = False,
               page_size: int = 256) -> list[Record]:
        records: list[Record] = []
        offset = None
        while True:
            with self._gate.read():
                page, offset = self._shard(collection).scroll(qe.ScrollRequest(
                    offset=offset, limit=page_size, filter=_filter(where), with_payload=True,
                    with_vector=with_vectors))
            records.extend(record_from(point, with_vectors) for point in page)
            if offset is None:
                return records

    def count(self, collection: str, where: Filter) -> int:
        with self._gate.read():
            return int(self._shard(collection).count(qe.CountRequest(exact=True, filter=_filter(where))))

    def _write(self, collection: str, operation: Any) -> None:
        with self._lock:
            self._shard(collection).update(operation)
            if collection in self._journal:
                self._journal[collection].append(operation)

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

    def optimize(self, collection: str) -> bool:
        """Build the HNSW index (and quantized vectors) in this process. Edge holds the
        GIL meanwhile: nothing else in the process runs. See `rebuild_index`."""
        with self._lock, self._gate.read():
            return bool(self._shard(collection).optimize())

    def rebuild_index(self, collection: str) -> bool:
        """Build the index on a copy of the shard in a child process, then swap it in.

        Blocks the calling thread (run it in one) but not the store: reads and writes go
        on against the live shard; writes made meanwhile are replayed onto the indexed
        copy when it is swapped in, which holds reads and writes back only for the swap
        (close, rename, load, replay). Returns False if the child failed (the live shard
        is then left as it was)."""
        name = collection
        path, building, old = self.root / name, self.root / f".{name}.indexing", self.root / f".{name}.old"
        dim = self._dims[name]
        with self._lock:
            if name in self._journal:
                raise RuntimeError(f"an index rebuild of {name} is already running")
            self._shard(name).flush()
            shutil.rmtree(building, ignore_errors=True)
            # Writes wait for the copy (a torn WAL would not load); reads go on. Sparse:
            # Edge preallocates its WAL and segments, and holes copied as zeros cost time.
            shutil.copytree(path, building, copy_function=copy_sparse)
            self._journal[name] = []
        built = False
        try:
            built = self._build_index_copy(building, dim)
        finally:
            if not built:
                with self._lock:
                    self._journal.pop(name, None)
                shutil.rmtree(building, ignore_errors=True)
        if not built:
            return False
        with self._lock, self._gate.swap():
            pending = self._journal.pop(name)
            self._shards.pop(name).close()
            path.rename(old)
            building.rename(path)
            shard = qe.EdgeShard.load(str(path), edge_config(dim, self.index))
            for operation in pending:
                shard.update(operation)
            self._shards[name] = shard
        shutil.rmtree(old, ignore_errors=True)
        return True

    def _build_index_copy(self, building: Path, dim: int, timeout_s: float | None = None) -> bool:
        settings = json.dumps(asdict(self.index)) if self.index else "null"
        try:
            child = subprocess.run(
                [sys.executable, "-m", "serve_app.vectordb.edge_index", str(building), str(dim), settings],
                check=False, timeout=timeout_s, capture_output=True)
        except subprocess.TimeoutExpired:
            logger.error("building the index of %s took over %ss; kept the live shard", building, timeout_s)
            return False
        if child.returncode != 0:
            logger.error("building the index of %s failed; kept the live shard: %s", building,
                         child.stderr.decode(errors="replace")[-2000:])
        return child.returncode == 0

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
