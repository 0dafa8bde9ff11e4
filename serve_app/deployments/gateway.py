"""Gateway: the HTTP ingress. The FastAPI app comes from `serve_app.web.app.create_app`,
built in the replica from its settings and the typed clients of the two deployments."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.auth import KeyRing
from serve_app.config import Settings
from serve_app.deployments.clients import EmbedderClient, StoreClient
from serve_app.flows.ports import Ports
from serve_app.metrics import ServiceMetrics
from serve_app.web.app import Services, create_app


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class Gateway:
    def __init__(self, embedder: DeploymentHandle[Any], store: DeploymentHandle[Any]) -> None:
        settings = Settings()
        embedder_client, store_client = EmbedderClient(embedder), StoreClient(store)
        self.api = create_app(Services(
            ports=Ports(embedder_client, store_client, settings),
            keys=KeyRing(settings.auth_enabled, settings.api_keys_file, settings.api_keys),
            metrics=ServiceMetrics(),
            components={"embedder": embedder_client, "store": store_client},
        ))

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self.api
