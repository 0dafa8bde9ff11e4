"""The plan's Prometheus metrics are exported (with Ray's `ray_` prefix) by the running app."""

from __future__ import annotations

import time
import urllib.request

import httpx

from loadtests.launcher import ServeProcess
from serve_app.samples import data_uri

PLAN_METRICS = {
    "ray_enrollment_attempts_total", "ray_enrollment_success_total", "ray_enrollment_latency_seconds_bucket",
    "ray_verification_attempts_total", "ray_verification_verified_total", "ray_verification_similarity_score",
    "ray_verification_latency_seconds_bucket", "ray_api_errors_total",
}


def test_plan_metrics_are_scrapable(serve_app: ServeProcess, client: httpx.Client, samples) -> None:
    client.post("/api/v1/enroll_identity", json={"tenant_id": "metrics", "identity_id": "m",
                                                 "images_b64": [data_uri(samples["frontal"])]})
    client.post("/api/v1/enroll_identity", json={"tenant_id": "metrics", "identity_id": "m", "images_b64": []})
    verified = client.post("/api/v1/verify", json={"tenant_id": "metrics", "identity_id": "m",
                                                   "image_b64": data_uri(samples["probe_same_person"])})
    assert verified.status_code == 200, verified.text
    found: set[str] = set()
    deadline = time.monotonic() + 90  # Ray's agent exports on an interval
    while time.monotonic() < deadline and not PLAN_METRICS <= found:
        time.sleep(2)
        with urllib.request.urlopen(f"http://127.0.0.1:{serve_app.metrics_port}/metrics", timeout=10) as page:
            text = page.read().decode()
        found = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if not line.startswith("#")}
    assert PLAN_METRICS <= found, sorted(PLAN_METRICS - found)
