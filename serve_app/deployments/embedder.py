"""FaceEmbedder: detection + alignment + embedding, batched across concurrent requests."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ray import serve

from serve_app.component_metrics import EmbedderMetrics
from serve_app.config import Settings
from serve_app.embedding import EmbedRequest, EmbedResult, load_pipeline

logger = logging.getLogger("ray.serve")

DEFAULT_BATCH: dict[str, Any] = {"max_batch_size": 8, "batch_wait_timeout_s": 0.005}


# max_ongoing_requests must be >= max_batch_size or batches never fill.
@serve.deployment(max_ongoing_requests=32, ray_actor_options={"num_cpus": 1})
class FaceEmbedder:
    def __init__(self) -> None:
        # The models run a warm-up batch as they load: the first request does not pay for it.
        self.pipeline = load_pipeline(Settings())
        self.batch_config = dict(DEFAULT_BATCH)
        self.metrics = EmbedderMetrics()
        logger.info("FaceEmbedder ready: detector on %s, recognizer on %s",
                    self.pipeline.detector.provider, self.pipeline.recognizer.provider)

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.batch_config = {**DEFAULT_BATCH, **(config or {})}
        # @serve.batch's typing drops the setters it adds to the method.
        batched: Any = self.embed
        batched.set_max_batch_size(int(self.batch_config["max_batch_size"]))
        batched.set_batch_wait_timeout_s(float(self.batch_config["batch_wait_timeout_s"]))

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def embed(self, requests: list[EmbedRequest]) -> list[EmbedResult]:
        # onnxruntime releases the GIL: run it off the event loop so requests keep
        # queueing (and the next batch keeps forming) while this one computes.
        results = await asyncio.to_thread(self.pipeline.run, requests)
        timings = results[0].timings if results else None
        if timings is not None:
            self.metrics.batch(timings, images=len(requests), faces=sum(len(result.faces) for result in results))
        return results

    def health(self) -> dict[str, Any]:
        return {"status": "ok", **self.pipeline.describe(), "batch": self.batch_config}
