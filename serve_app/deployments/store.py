"""FaceStore: owns the Qdrant connection (or the embedded Edge shards)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from serve_app.config import get_settings
from serve_app.repository import FaceRepository
from serve_app.store import open_store

logger = logging.getLogger("ray.serve")


# Embedded mode: one process may open a shard, so exactly one replica (serve_config.yaml).
@serve.deployment(num_replicas=1, max_ongoing_requests=128, ray_actor_options={"num_cpus": 0.1})
class FaceStore:
    def __init__(self) -> None:
        settings = get_settings()
        self.repository = FaceRepository.for_settings(open_store(settings), settings)
        self.repository.ensure_all()
        stats = self.repository.stats()
        logger.info("ensure_all() done on %s: %s", stats["engine"], stats["collections"])

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one FaceRepository method in a worker thread (storage calls block)."""
        if method.startswith("_") or not callable(getattr(self.repository, method, None)):
            raise AttributeError(f"FaceRepository has no method {method!r}")
        return await asyncio.to_thread(getattr(self.repository, method), *args, **kwargs)

    async def health(self) -> dict[str, Any]:
        stats = await asyncio.to_thread(self.repository.stats)
        return {"status": "ok", **stats}

    def __del__(self) -> None:
        # Serve calls __del__ on graceful shutdown: flush and release the shard locks.
        repository = getattr(self, "repository", None)
        if repository is not None:
            repository.store.close()
