"""FaceStore: owns the Qdrant connection (or the embedded Edge shards).

Each store operation is a method of this deployment (inherited from
`ThreadedRepository`, which runs it in a worker thread); the Gateway calls them through
`serve_app.deployments.clients.StoreClient`.
"""

from __future__ import annotations

import dataclasses
import logging
from ray import serve

from serve_app.config import Settings
from serve_app.flows.ports import ThreadedRepository
from serve_app.repository import FaceRepository
from serve_app.store import open_store

logger = logging.getLogger("ray.serve")


# Embedded mode: one process may open a shard, so exactly one replica (serve_config.yaml).
@serve.deployment(num_replicas=1, max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.1})
class FaceStore(ThreadedRepository):
    def __init__(self) -> None:
        settings = Settings()
        repository = FaceRepository.for_settings(open_store(settings), settings)
        repository.ensure_all()
        super().__init__(repository)
        stats = repository.stats()
        logger.info("ensure_all() done on %s: %s", stats.engine, dataclasses.asdict(stats)["collections"])

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: flush and release the shard locks.
        repository = getattr(self, "repository", None)
        if repository is not None:
            repository.store.close()
