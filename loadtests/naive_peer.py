"""The naive peer for `make bench`: what a user could run instead of the Serve graph.

One uvicorn process, one event loop, the same models (`load_pipeline`, same provider
choice) and the same embedded store engine (Qdrant Edge through `FaceRepository`), the
same flows. No Ray, no batching across requests: each request embeds its own image in
a worker thread. It exposes the graph's health, enroll_identity, verify and search
endpoints with the same bodies, so the benchmark drives both identically.

    QDRANT_PATH=/tmp/peer python -m loadtests.naive_peer --port 8011
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from serve_app.auth import resolve_tenant
from serve_app.config import SERVICE_NAME, get_settings
from serve_app.embedding import EmbedRequest, load_pipeline
from serve_app.errors import DomainError
from serve_app.flows import enroll as enroll_flow
from serve_app.flows import search as search_flow
from serve_app.flows import verify as verify_flow
from serve_app.flows.ports import LocalPort, PipelineEmbedder, Ports
from serve_app.images import decode_base64
from serve_app.repository import FaceRepository
from serve_app.samples import sample_set
from serve_app.schemas import EnrollRequest, SearchRequest, VerifyRequest
from serve_app.store import open_store


class Peer:
    def __init__(self) -> None:
        self.settings = get_settings()
        self.pipeline = load_pipeline(self.settings)
        self.repository = FaceRepository.for_settings(open_store(self.settings), self.settings)
        self.repository.ensure_all()
        self.ports = Ports(PipelineEmbedder(self.pipeline), LocalPort(self.repository), self.settings)

    def image(self, value: str) -> bytes:
        return decode_base64(value, self.settings.max_image_bytes)

    def close(self) -> None:
        self.repository.store.close()


def build_app() -> FastAPI:
    peer: Peer | None = None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        nonlocal peer
        peer = await asyncio.to_thread(Peer)
        # Pay the first onnxruntime run here, as the FaceEmbedder does in its constructor.
        await peer.ports.embedder.embed(EmbedRequest(sample_set()["frontal"]))
        yield
        peer.close()

    app = FastAPI(title="face-pipeline naive peer", lifespan=lifespan)

    def ready() -> Peer:
        assert peer is not None, "lifespan has run"
        return peer

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status_code)

    @app.get("/api/v1/health")
    async def health() -> dict[str, Any]:
        pipeline = ready().pipeline
        return {"status": "healthy", "service": SERVICE_NAME + " (naive peer)",
                "components": {"embedder": {"status": "ok", "provider": pipeline.recognizer.provider,
                                            "detector_provider": pipeline.detector.provider}}}

    @app.post("/api/v1/enroll_identity")
    async def enroll_identity(body: EnrollRequest) -> Any:
        current = ready()
        images = [current.image(value) for value in body.images_b64]
        return await enroll_flow.enroll_identity(current.ports, resolve_tenant(body.tenant_id, None), body.identity_id, images)

    @app.post("/api/v1/verify")
    async def verify(body: VerifyRequest) -> Any:
        current = ready()
        return await verify_flow.verify(current.ports, resolve_tenant(body.tenant_id, None), body.identity_id,
                                        current.image(body.image_b64), body.hi_threshold)

    @app.post("/api/v1/search")
    async def search(body: SearchRequest) -> Any:
        current = ready()
        return await search_flow.search(current.ports, resolve_tenant(body.tenant_id, None), current.image(body.image_b64),
                                        body.top_k)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the naive peer (one process, no Ray, no batching).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8011)
    args = parser.parse_args(argv)
    uvicorn.run(build_app(), host=args.host, port=args.port, workers=1, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
