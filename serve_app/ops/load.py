"""Requests against a running service for `profile` and `leaks`: one endpoint, N times,
with the sample photos, timing each answer and reading its `Server-Timing` header."""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from rich.progress import Progress

from serve_app.ops.context import OpsError
from serve_app.samples import sample_set

PROFILE_IDENTITY = "ops-profile-1"
ENDPOINTS = ("/api/v1/verify", "/api/v1/search", "/api/v1/enroll_identity", "/api/v1/ingest", "/api/v1/health")


@dataclass
class Sample:
    seconds: float
    status: int
    stages: dict[str, float] = field(default_factory=dict)  # Server-Timing, milliseconds


def parse_server_timing(header: str | None) -> dict[str, float]:
    """`embed;dur=12.3, store;desc="x";dur=1.5` -> {"embed": 12.3, "store": 1.5} (RFC-style
    metrics without a duration are left out)."""
    stages: dict[str, float] = {}
    for metric in (header or "").split(","):
        name, *params = (part.strip() for part in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if name and key.strip().lower() == "dur":
                try:
                    stages[name] = stages.get(name, 0.0) + float(value.strip().strip('"'))
                except ValueError:
                    pass
    return stages


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass
class Workload:
    """How to call one endpoint, and what it needs first (an enrolled identity)."""

    endpoint: str
    tenant: str
    photo: bytes | None = None

    def __post_init__(self) -> None:
        if self.endpoint not in ENDPOINTS:
            raise OpsError(f"unsupported endpoint {self.endpoint}; one of {', '.join(ENDPOINTS)}")
        self.samples = sample_set()
        self.probe = self.photo or self.samples["probe_same_person"]
        self.enrollment = [self.samples[name] for name in ("frontal", "left", "right")]

    def _enroll_body(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant, "identity_id": PROFILE_IDENTITY,
                "images_b64": [_b64(image) for image in self.enrollment]}

    def setup(self, client: httpx.Client) -> None:
        if self.endpoint in ("/api/v1/verify",):
            response = client.post("/api/v1/enroll_identity", json=self._enroll_body())
            if response.status_code != 200:
                raise OpsError(f"enrolling {self.tenant}/{PROFILE_IDENTITY} for the profile failed: "
                               f"HTTP {response.status_code} {response.text[:200]}")

    def teardown(self, client: httpx.Client) -> None:
        if self.endpoint in ("/api/v1/verify", "/api/v1/enroll_identity"):
            client.delete(f"/api/v1/identities/{PROFILE_IDENTITY}", headers={"X-Tenant-ID": self.tenant})

    def request(self, client: httpx.Client) -> httpx.Response:
        probe = _b64(self.probe)
        if self.endpoint == "/api/v1/health":
            return client.get(self.endpoint)
        if self.endpoint == "/api/v1/verify":
            body: dict[str, Any] = {"tenant_id": self.tenant, "identity_id": PROFILE_IDENTITY, "image_b64": probe}
        elif self.endpoint == "/api/v1/search":
            body = {"tenant_id": self.tenant, "image_b64": probe, "top_k": 10}
        elif self.endpoint == "/api/v1/ingest":
            body = {"tenant_id": self.tenant, "site": "ops-profile", "image_b64": probe}
        else:
            body = self._enroll_body()
        return client.post(self.endpoint, json=body)


def run_requests(client: httpx.Client, workload: Workload, count: int, concurrency: int,
                 label: str = "requests", on_done: Callable[[], None] | None = None) -> list[Sample]:
    """`count` requests from `concurrency` threads; every answer timed (none retried)."""

    def one(_: int) -> Sample:
        started = time.perf_counter()
        try:
            response = workload.request(client)
        except httpx.HTTPError:
            return Sample(time.perf_counter() - started, 0)
        return Sample(time.perf_counter() - started, response.status_code,
                      parse_server_timing(response.headers.get("server-timing")))

    samples: list[Sample] = []
    with Progress(transient=True) as progress, ThreadPoolExecutor(max(1, concurrency)) as pool:
        task = progress.add_task(label, total=count)
        for sample in pool.map(one, range(count)):
            samples.append(sample)
            progress.advance(task)
            if on_done is not None:
                on_done()
    return samples
