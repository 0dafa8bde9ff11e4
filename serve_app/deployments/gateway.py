"""Gateway: the HTTP ingress. The FastAPI app comes from `serve_app.web.app.create_app`,
built in the replica from its settings and the typed clients of the two deployments.

Its `user_config` carries the switches an operator flips on a running service without a
restart (Serve calls `reconfigure`; no other deployment is touched):
`enable_verification_flow` (the plan's partial rollback) overrides ENABLE_VERIFICATION_FLOW;
absent, the environment's value holds. `python -m serve_app.flow_switch off` deploys it.
"""

from __future__ import annotations

from typing import Any

import logging

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from ray import serve
from ray.serve.handle import DeploymentHandle

from serve_app.auth import KeyRing
from serve_app.config import Settings
from serve_app.deployments.clients import EmbedderClient, StoreClient
from serve_app.flows.ports import Ports
from serve_app.gauge_refresh import GaugeRefresher, report_interval_s
from serve_app.metrics import ServiceMetrics
from serve_app.web.app import FeatureFlags, Services, create_app

logger = logging.getLogger("ray.serve")


class GatewayOptions(BaseModel):
    """The Gateway's `user_config`; an unknown key fails the deployment instead of being ignored."""

    model_config = ConfigDict(extra="forbid")

    enable_verification_flow: bool | None = None


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class Gateway:
    def __init__(self, embedder: DeploymentHandle[Any], store: DeploymentHandle[Any]) -> None:
        settings = Settings()
        self.settings = settings
        self.flags = FeatureFlags(verification_flow=settings.enable_verification_flow)
        embedder_client, store_client = EmbedderClient(embedder), StoreClient(store)
        metrics = ServiceMetrics()
        self.gauges = GaugeRefresher(metrics.refresh_gauges, report_interval_s() / 2).start()
        self.api = create_app(Services(
            ports=Ports(embedder_client, store_client, settings),
            keys=KeyRing(settings.auth_enabled, settings.api_keys_file, settings.api_keys),
            metrics=metrics,
            components={"embedder": embedder_client, "store": store_client},
            flags=self.flags,
        ))

    def reconfigure(self, config: dict[str, Any]) -> None:
        options = GatewayOptions.model_validate(config or {})
        enabled = (self.settings.enable_verification_flow if options.enable_verification_flow is None
                   else options.enable_verification_flow)
        if enabled != self.flags.verification_flow:
            logger.warning("verification flow %s by user_config", "enabled" if enabled else "disabled")
        self.flags.verification_flow = enabled

    def __serve_build_asgi_app__(self) -> FastAPI:
        return self.api
