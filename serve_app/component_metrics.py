"""Metrics of the FaceStore and FaceEmbedder deployments (the Gateway's: serve_app.metrics).

Names start with `store_`, `collection_` and `embedder_`, prefixes that
deploy/prometheus/prometheus.yml strips of Ray's `ray_`. Ray Serve already exports each
`@serve.batch` call's size and time as histograms (`ray_serve_actual_batch_size`,
`ray_serve_batch_execution_time_ms`); these add what it cannot see, the faces and the
model stages, and exact counts: Ray's agent estimates a histogram's `_sum` from its
bucket midpoints, so sums that must add up are counters here.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

from serve_app.stage_timing import BatchTimings

# Storage calls take from tens of microseconds (Edge, in process) to tens of ms (server).
STORE_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]
STAGE_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


class StoreMetrics:
    """A `serve_app.vectordb.timed.StoreObserver` on Ray's metrics."""

    def __init__(self) -> None:
        # Ray annotates tag_keys as a 1-tuple (Tuple[str]); any number of keys works.
        self.latency = Histogram("store_operation_seconds", description="Storage call time by operation and collection",
                                 boundaries=STORE_BUCKETS_S,
                                 tag_keys=("operation", "collection"))  # type: ignore[arg-type]
        self.sizes = Gauge("collection_points", description="Points in each collection",
                           tag_keys=("collection",))

    def operation(self, operation: str, collection: str, seconds: float) -> None:
        self.latency.observe(seconds, tags={"operation": operation, "collection": collection})

    def points(self, collection: str, count: int) -> None:
        self.sizes.set(count, tags={"collection": collection})


class EmbedderMetrics:
    def __init__(self) -> None:
        self.stages = Histogram("embedder_stage_seconds", description="Time of one model batch in each stage",
                                boundaries=STAGE_BUCKETS_S, tag_keys=("stage",))
        self.batches = Counter("embedder_batches", description="Model batches run")
        self.images = Counter("embedder_images", description="Images through the detector")
        self.faces = Counter("embedder_faces", description="Faces through the recognizer")

    def batch(self, timings: BatchTimings, images: int, faces: int) -> None:
        for stage, seconds in timings.stages():
            self.stages.observe(seconds, tags={"stage": stage})
        self.batches.inc()
        self.images.inc(images)
        if faces:
            self.faces.inc(faces)
