"""FaceEmbedder: detection + alignment + embedding, batched across concurrent requests."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from typing import Any

from ray import serve

from serve_app.component_metrics import EmbedderMetrics
from serve_app.config import Settings
from serve_app.embedding import EmbedRequest, EmbedResult, load_pipeline
from serve_app.errors import InvalidImage

logger = logging.getLogger("ray.serve")

DEFAULT_BATCH: dict[str, Any] = {"max_batch_size": 8, "batch_wait_timeout_s": 0.005}
# After a batch with an image this large, glibc is asked to return the heap's free pages:
# measured on a batch of 8 gallery images of 10-25 MP, RSS 814 -> 729 MB, 1-15 ms.
TRIM_AFTER_PIXELS = 4_000_000
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def release_free_heap() -> bool:
    """glibc's malloc_trim: free heap pages back to the OS (False where there is none)."""
    trim = getattr(_LIBC, "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False


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
        try:
            results = await asyncio.to_thread(self.pipeline.run, requests)
        except Exception:
            # FacePipeline already turns one image's failure into that request's refusal;
            # should anything escape it, the batch is re-run request by request, so that
            # only the request that causes it fails, never the batch it arrived in.
            logger.exception("embedding batch of %d failed; re-running its requests one by one", len(requests))
            return [await self._embed_alone(request) for request in requests]
        timings = results[0].timings if results else None
        if timings is not None:
            self.metrics.batch(timings, images=len(requests), faces=sum(len(result.faces) for result in results))
        if any(result.width * result.height > TRIM_AFTER_PIXELS for result in results):
            await asyncio.to_thread(release_free_heap)
        return results

    async def _embed_alone(self, request: EmbedRequest) -> EmbedResult:
        try:
            return (await asyncio.to_thread(self.pipeline.run, [request]))[0]
        except Exception:
            logger.exception("embedding request failed alone")
            return EmbedResult(error=InvalidImage("invalid_image", 422))

    def health(self) -> dict[str, Any]:
        return {"status": "ok", **self.pipeline.describe(), "batch": self.batch_config}
