"""`make bench-gallery`: the embedded store (Qdrant Edge) with a large gallery.

Fills a fresh store, through the service's own `FaceRepository` and `EdgeStore`, with N
synthetic faces across tenants: most are noisy samples around per-identity centres
(tagged with that identity, as ingestion tags them), the rest random, so that a probe
has true neighbours and recall means something. Then it measures, in order:
  empty: verify latency with the identities enrolled and no gallery (the baseline);
  load: insert rate, memory (this process's RSS, less the copy of the vectors kept
      for exact search) and disk;
  plain: legacy search (tenant filter, top 10) and verify (template + the identity's
      gallery faces, top VERIFY_TOP_K) p50/p95 and recall@10 against exact search,
      before any index exists (Edge searches brute force, helped by payload indexes);
  during: the index built in the background as the service builds it (`EdgeStore.
      rebuild_index`: a child process, while this one keeps searching and writing, with
      the service's EDGE_* settings: HNSW, int8 vectors rescored); search and write
      latency meanwhile and the build time;
  indexed: the same figures once the index is in place (a first pass that warms the
      page cache, reported apart, then the steady state).
Recall@10: the share of the exact top 10 (numpy, over the tenant's vectors) that the
store's top 10 holds. Prints a table; writes `results/bench/gallery.json`.

    python -m loadtests.bench_gallery [--faces 1000000] [--tenants 10] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from loadtests.launcher import REPO_ROOT
from serve_app.config import Settings
from serve_app.repository import FaceRepository
from serve_app.similarity import cosine
from serve_app.vectordb.base import IndexSettings, Record
from serve_app.vectordb.edge import EdgeStore

DEFAULT_OUT = REPO_ROOT / "results" / "bench"
DIM = 512
TOP_K = 10
VERIFY_TOP_K, VERIFY_HNSW_EF = 50, 128  # the service's defaults (env.example)
FACE_SPREAD = 0.045  # per-dimension noise around an identity centre: cosine ~0.7 to it
CLUSTERED_SHARE = 0.8


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@dataclass
class Gallery:
    """What was loaded, kept for exact search: vectors, their tenant and identity."""

    vectors: np.ndarray  # (n, DIM) float32, unit
    tenants: np.ndarray  # (n,) tenant index
    identities: np.ndarray  # (n,) identity index within the tenant, -1 = untagged
    centres: np.ndarray  # (tenants, identities per tenant, DIM)

    def exact_top(self, tenant: int, probe: np.ndarray, k: int) -> list[str]:
        rows = np.flatnonzero(self.tenants == tenant)
        scores = self.vectors[rows] @ probe
        best = rows[np.argsort(-scores)[:k]]
        return [face_id(int(row)) for row in best]


def face_id(row: int) -> str:
    return str(uuid.UUID(int=row + 1))


def tenant_name(index: int) -> str:
    return f"tenant-{index}"


def identity_name(index: int) -> str:
    return f"person-{index}"


def percentiles(values: list[float]) -> dict[str, float]:
    data = np.array(values) * 1000.0 if values else np.zeros(1)
    return {"p50_ms": float(np.percentile(data, 50)), "p95_ms": float(np.percentile(data, 95)),
            "max_ms": float(data.max()), "n": len(values)}


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss / 2**20)


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def generate(args: argparse.Namespace, rng: np.random.Generator) -> Gallery:
    centres = unit(rng.standard_normal((args.tenants, args.identities, DIM)))
    tenants = rng.integers(0, args.tenants, args.faces)
    clustered = rng.random(args.faces) < CLUSTERED_SHARE
    identities = np.where(clustered, rng.integers(0, args.identities, args.faces), -1)
    vectors = np.empty((args.faces, DIM), np.float32)
    for start in range(0, args.faces, 50_000):
        end = min(start + 50_000, args.faces)
        noise = rng.standard_normal((end - start, DIM)).astype(np.float32)
        ids = identities[start:end]
        around = centres[tenants[start:end], np.maximum(ids, 0)] + FACE_SPREAD * noise
        vectors[start:end] = np.where((ids >= 0)[:, None], unit(around), unit(noise))
    return Gallery(vectors, tenants, identities, centres)


def load(repository: FaceRepository, gallery: Gallery, batch: int) -> float:
    """Insert every face in batches straight into the store, with the payload ingestion
    gives a face tagged with an enrolled identity (tenant, identity, its generation);
    faces/s. (Ingestion proper adds per-image de-duplication, not what is measured here.)"""
    generations: dict[tuple[int, int], str | None] = {}
    for tenant, identity in np.ndindex(*gallery.centres.shape[:2]):
        found = repository.get_identity(tenant_name(tenant), identity_name(identity))
        generations[tenant, identity] = found.generation if found else None
    started = time.perf_counter()
    for start in range(0, len(gallery.vectors), batch):
        records = []
        for row in range(start, min(start + batch, len(gallery.vectors))):
            tenant, identity = int(gallery.tenants[row]), int(gallery.identities[row])
            payload: dict[str, Any] = {"tenant_id": tenant_name(tenant), "site": "bench.example"}
            if identity >= 0:
                payload |= {"identity_id": identity_name(identity), "identity_gen": generations[tenant, identity]}
            records.append(Record(face_id(row), payload, gallery.vectors[row]))
        repository.store.upsert(repository.faces, records)
    return len(gallery.vectors) / (time.perf_counter() - started)


@dataclass(frozen=True)
class Probe:
    tenant: int
    identity: int
    vector: np.ndarray


def probes(gallery: Gallery, count: int, rng: np.random.Generator) -> list[Probe]:
    tenants, identities = gallery.centres.shape[:2]
    found = []
    for _ in range(count):
        tenant, identity = int(rng.integers(tenants)), int(rng.integers(identities))
        noise = rng.standard_normal(DIM).astype(np.float32)
        found.append(Probe(tenant, identity, unit(gallery.centres[tenant, identity] + FACE_SPREAD * noise)))
    return found


def measure(repository: FaceRepository, gallery: Gallery | None, queries: list[Probe]) -> dict[str, Any]:
    """Legacy search and verify latency over the probes; recall@10 of the search."""
    search_s, verify_s, recalls, gallery_hits = [], [], [], []
    for probe in queries:
        tenant = tenant_name(probe.tenant)
        started = time.perf_counter()
        hits = repository.search_faces(tenant, probe.vector, TOP_K)
        search_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        identity, found = repository.identity_with_gallery(tenant, identity_name(probe.identity), probe.vector,
                                                       VERIFY_TOP_K, VERIFY_HNSW_EF)
        if identity is None:
            raise RuntimeError(f"identity {probe.identity} of {tenant} is not enrolled")
        cosine(probe.vector, identity.template)
        verify_s.append(time.perf_counter() - started)
        gallery_hits.append(len(found))
        if gallery is not None:
            exact = gallery.exact_top(probe.tenant, probe.vector, TOP_K)
            recalls.append(len({hit.id for hit in hits} & set(exact)) / max(len(exact), 1))
    return {"search": percentiles(search_s), "verify": percentiles(verify_s),
            "recall_at_10": float(np.mean(recalls)) if recalls else None,
            "verify_gallery_hits_mean": float(np.mean(gallery_hits))}


def in_background(store: EdgeStore, repository: FaceRepository, collection: str, gallery: Gallery,
                  queries: list[Probe], rng: np.random.Generator) -> dict[str, Any]:
    """Rebuild the index in the background; meanwhile search and write, and time both."""
    outcome: list[bool] = []
    builder = threading.Thread(target=lambda: outcome.append(store.rebuild_index(collection)))
    search_s: list[float] = []
    write_s: list[float] = []
    started = time.perf_counter()
    builder.start()
    written = 0
    while builder.is_alive():
        probe = queries[len(search_s) % len(queries)]
        began = time.perf_counter()
        repository.search_faces(tenant_name(probe.tenant), probe.vector, TOP_K)
        search_s.append(time.perf_counter() - began)
        if len(search_s) % 5 == 0:  # a trickle of writes, as a crawler would send
            record = Record(str(uuid.uuid4()), {"tenant_id": tenant_name(probe.tenant)}, unit(rng.standard_normal(DIM)))
            began = time.perf_counter()
            repository.store.upsert(repository.faces, [record])
            write_s.append(time.perf_counter() - began)
            written += 1
        time.sleep(0.02)
    builder.join()
    return {"built": outcome == [True], "seconds": time.perf_counter() - started, "writes": written,
            "search": percentiles(search_s), "write": percentiles(write_s)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(args.seed)
    root = Path(tempfile.mkdtemp(prefix="face-bench-gallery-", dir=args.dir))
    index = IndexSettings(hnsw_m=args.hnsw_m, hnsw_ef_construct=args.ef_construct, int8=args.int8)
    store = EdgeStore(root, index)
    repository = FaceRepository(store, "faces_v1", "identities_v1", DIM)
    figures: dict[str, Any] = {"faces": args.faces, "tenants": args.tenants,
                               "identities_per_tenant": args.identities, "queries": args.queries,
                               "index": asdict(index)}
    step: Callable[[str], None] = lambda text: print(text, flush=True)  # noqa: E731
    try:
        repository.ensure_all()
        base_rss = rss_mb()
        step(f"generating {args.faces:,} faces ...")
        gallery = generate(args, rng)
        queries = probes(gallery, args.queries, rng)
        for tenant in range(args.tenants):
            for identity in range(args.identities):
                repository.save_identity(tenant_name(tenant), identity_name(identity),
                                         gallery.centres[tenant, identity], [], {})
        figures["empty"] = measure(repository, None, queries)
        step(f"  empty gallery: verify p50 {figures['empty']['verify']['p50_ms']:.2f} ms")
        rss_before = rss_mb()
        step("loading ...")
        figures["insert_per_s"] = load(repository, gallery, args.batch)
        store.close()  # flushed and reopened: what a restarted service sees
        store = EdgeStore(root, index)
        repository = FaceRepository(store, "faces_v1", "identities_v1", DIM)
        repository.ensure_all()
        figures["memory_mb"] = {"rss_store": rss_mb() - base_rss - gallery.vectors.nbytes / 2**20,
                                "rss_total": rss_mb(), "rss_before_load": rss_before,
                                "vectors_float32": gallery.vectors.nbytes / 2**20}
        figures["disk_mb"] = {"plain": disk_mb(root)}
        step(f"  {figures['insert_per_s']:.0f} faces/s; disk {figures['disk_mb']['plain']:.0f} MB")
        figures["plain"] = measure(repository, gallery, queries)
        report_line("plain", figures["plain"])
        step(f"building the index in the background ({describe_index(index)}) ...")
        figures["during_build"] = in_background(store, repository, "faces_v1", gallery, queries, rng)
        during = figures["during_build"]
        step(f"  built in {during['seconds']:.0f} s; meanwhile {during['search']['n']} searches "
             f"p50 {during['search']['p50_ms']:.1f} / p95 {during['search']['p95_ms']:.1f} ms, "
             f"{during['writes']} writes p95 {during['write']['p95_ms']:.1f} ms")
        figures["indexed_vectors"] = store.describe("faces_v1").indexed_vectors
        # The first pass after the swap reads the new segments from disk into the page
        # cache; the second is the steady state.
        figures["indexed_first_pass"] = measure(repository, gallery, queries)
        report_line("1st pass", figures["indexed_first_pass"])
        figures["indexed"] = measure(repository, gallery, queries)
        figures["disk_mb"]["indexed"] = disk_mb(root)
        figures["memory_mb"]["rss_indexed"] = rss_mb()
        report_line("indexed", figures["indexed"])
    finally:
        store.close()
        shutil.rmtree(root, ignore_errors=True)
    return figures


def describe_index(index: IndexSettings) -> str:
    return f"HNSW m={index.hnsw_m} ef_construct={index.hnsw_ef_construct}" + (", int8" if index.int8 else ", float32")


def report_line(label: str, measured: dict[str, Any]) -> None:
    recall = measured["recall_at_10"]
    print(f"  {label:<8} search p50 {measured['search']['p50_ms']:6.2f} / p95 {measured['search']['p95_ms']:6.2f} ms"
          f"   verify p50 {measured['verify']['p50_ms']:6.2f} / p95 {measured['verify']['p95_ms']:6.2f} ms"
          f"   recall@10 {recall:.3f}", flush=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--faces", type=int, default=1_000_000, help="gallery faces in all")
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--identities", type=int, default=200, help="identities per tenant")
    parser.add_argument("--queries", type=int, default=200, help="probes per measurement")
    parser.add_argument("--batch", type=int, default=1000, help="faces per insert call")
    service = Settings()
    parser.add_argument("--hnsw-m", type=int, default=service.edge_hnsw_m)
    parser.add_argument("--ef-construct", type=int, default=service.edge_hnsw_ef_construct)
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=service.edge_int8,
                        help="int8 vectors in the index (default: EDGE_INT8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary store goes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    figures = {"when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "cpus": os.cpu_count(), **run(args),
               "load_average_at_end": os.getloadavg()}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gallery.json"
    path.write_text(json.dumps(figures, indent=2))
    print(f"written: {path}")
    return figures


if __name__ == "__main__":
    main()
