"""The in-process peer for `make bench`: the same HTTP app without Ray.

`serve_app.web.app.create_app` with in-process ports: the same models (`load_pipeline`,
same provider choice), the same embedded store engine (Qdrant Edge through
`FaceRepository`), the same flows, routes, auth and metrics. One uvicorn process, one
event loop, no batching across requests: each request embeds its own image in a worker
thread. What it gains over the graph is what the graph's hops cost.

    QDRANT_PATH=/tmp/peer python -m loadtests.naive_peer --port 8011
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from loadtests.peer_server import serve
from serve_app.auth import KeyRing
from serve_app.config import Settings
from serve_app.embedding import EmbedRequest, load_pipeline
from serve_app.flows.ports import PipelineEmbedder, Ports, ThreadedRepository
from serve_app.metrics import ServiceMetrics
from serve_app.repository import FaceRepository
from serve_app.samples import sample_set
from serve_app.vectordb import open_store
from serve_app.web.app import Services, create_app


def build_app(settings: Settings) -> tuple[FastAPI, FaceRepository]:
    repository = FaceRepository.for_settings(open_store(settings), settings)
    repository.ensure_all()
    embedder = PipelineEmbedder(load_pipeline(settings))
    store = ThreadedRepository(repository)
    # Pay the first onnxruntime run here, as the FaceEmbedder does in its constructor.
    asyncio.run(embedder.embed(EmbedRequest(sample_set()["frontal"])))
    app = create_app(Services(
        ports=Ports(embedder, store, settings),
        keys=KeyRing(settings.auth_enabled, settings.api_keys_file, settings.api_keys),
        metrics=ServiceMetrics(),
        components={"embedder": embedder, "store": store},
    ))
    return app, repository


def main(argv: list[str] | None = None) -> None:
    serve(build_app, "Serve the in-process peer (one process, no Ray, no batching).", 8011, argv)


if __name__ == "__main__":
    main()
