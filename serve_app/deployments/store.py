"""FaceStore: owns the Qdrant connection (or the embedded Edge shards).

Each store operation is a method of this deployment (inherited from
`ThreadedRepository`, which runs it in a worker thread); the Gateway calls them through
`serve_app.deployments.clients.StoreClient`.

A wrong profile (several replicas on the embedded store, collections of another vector
size or written by another model) is refused once, with one log line: the replica stays
up, reports the reason in health (so the service is unhealthy) and answers every
operation with 503 and that reason, instead of crash-looping on a lock or an error.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ray import serve

from serve_app.component_metrics import StoreMetrics
from serve_app.config import Settings
from serve_app.gauge_refresh import GaugeRefresher, report_interval_s
from serve_app.flows.ports import ThreadedAdmin, ThreadedRepository
from serve_app.model_identity import ModelIdentity
from serve_app.repository import FaceRepository
from serve_app.vectordb.index_upkeep import start_upkeep
from serve_app.vectordb.provenance import ProfileRefusal, RefusedStore, open_repository, recognizer_fingerprint
from serve_app.vectordb.timed import TimedStore

logger = logging.getLogger("ray.serve")


def planned_replicas() -> int:
    """The most replicas this deployment may run, from its deployed config."""
    config = serve.get_replica_context()._deployment_config
    autoscaling = config.autoscaling_config
    return int(autoscaling.max_replicas) if autoscaling is not None else int(config.num_replicas or 1)


# Embedded mode: one process may open a shard, so exactly one replica (serve_config.yaml).
@serve.deployment(num_replicas=1, max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.1})
class FaceStore(ThreadedRepository, ThreadedAdmin):
    """The service's store operations (`ThreadedRepository`) and the operator's
    (`ThreadedAdmin`: views, cleanup, backups under BACKUP_DIR)."""

    def __init__(self) -> None:
        settings = Settings()
        self.refusal: ProfileRefusal | None = None
        fingerprint = recognizer_fingerprint(settings)
        try:
            # Every storage call timed by operation and collection ("Qdrant latency").
            repository = open_repository(settings, planned_replicas(), fingerprint,
                                         wrap=lambda store: TimedStore(store, StoreMetrics()))
        except ProfileRefusal as refusal:
            logger.error("FaceStore refuses to serve: %s", refusal)
            self.refusal = refusal
            repository = FaceRepository.for_settings(RefusedStore(refusal), settings)
        ThreadedRepository.__init__(self, repository)
        ThreadedAdmin.__init__(self, repository, settings,
                               ModelIdentity(fingerprint.name, fingerprint.sha256, settings.vector_dim))
        if self.refusal is None:
            # Collection sizes read again every half report interval (each read sets the
            # gauge): they stay exported, and follow writes made elsewhere (another
            # replica on a Qdrant server, bulk ingestion).
            self.sizes = GaugeRefresher(repository.stats, report_interval_s() / 2).start()
            # The embedded store's HNSW index, rebuilt in the background after bulk loads.
            self.upkeep = start_upkeep(repository.store, [repository.faces, repository.identities], settings)
            stats = repository.stats()
            logger.info("ensure_all() done on %s: %s", stats.engine, dataclasses.asdict(stats)["collections"])

    async def health(self) -> dict[str, Any]:
        if self.refusal is not None:
            return {"status": "down", "error": self.refusal.code, "reason": self.refusal.message}
        return await super().health()

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: flush and release the shard locks.
        for worker in (getattr(self, "sizes", None), getattr(self, "upkeep", None)):
            if worker is not None:
                worker.stop()
        repository = getattr(self, "repository", None)
        if repository is not None:
            repository.store.close()
