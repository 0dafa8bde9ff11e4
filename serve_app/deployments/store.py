"""FaceStore: owns the Qdrant connection (or the embedded Edge shards).

Each store operation is a method of this deployment (inherited from
`ThreadedRepository`, which runs it in a worker thread); the Gateway calls them through
`serve_app.deployments.clients.StoreClient`.
"""

from __future__ import annotations

import dataclasses
import logging
from ray import serve

from serve_app.component_metrics import StoreMetrics
from serve_app.config import Settings
from serve_app.gauge_refresh import GaugeRefresher, report_interval_s
from serve_app.flows.ports import ThreadedRepository
from serve_app.repository import FaceRepository
from serve_app.store import open_store
from serve_app.store.timed import TimedStore

logger = logging.getLogger("ray.serve")


# Embedded mode: one process may open a shard, so exactly one replica (serve_config.yaml).
@serve.deployment(num_replicas=1, max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.1})
class FaceStore(ThreadedRepository):
    def __init__(self) -> None:
        settings = Settings()
        # Every storage call timed by operation and collection ("Qdrant latency").
        repository = FaceRepository.for_settings(TimedStore(open_store(settings), StoreMetrics()), settings)
        repository.ensure_all()
        super().__init__(repository)
        # Collection sizes read again every half report interval (each read sets the
        # gauge): they stay exported, and follow writes made elsewhere (another
        # replica on a Qdrant server, bulk ingestion).
        self.sizes = GaugeRefresher(repository.stats, report_interval_s() / 2).start()
        stats = repository.stats()
        logger.info("ensure_all() done on %s: %s", stats.engine, dataclasses.asdict(stats)["collections"])

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: flush and release the shard locks.
        sizes = getattr(self, "sizes", None)
        if sizes is not None:
            sizes.stop()
        repository = getattr(self, "repository", None)
        if repository is not None:
            repository.store.close()
