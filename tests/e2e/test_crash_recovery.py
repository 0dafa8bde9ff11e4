"""Replicas killed with ray.kill while requests flow: Serve restarts them, clients see at
most short-lived 503s (never a 500), and no acknowledged write is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import Counter

import httpx
import pytest

from loadtests.launcher import ServeProcess
from serve_app.samples import ENROLLMENT_PHOTOS, data_uri

# Runs in its own process: attaching this pytest process to the app's Ray cluster would
# tie the test runner's lifetime to it.
KILL_REPLICA = """
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
deployment = sys.argv[2]
names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
         if a["namespace"] == "serve" and f"#{deployment}#" in a["name"]]
assert names, f"no replica of {deployment}"
ray.kill(ray.get_actor(names[0], namespace="serve"), no_restart=True)
print(names[0])
"""


def kill_replica(app: ServeProcess, deployment: str) -> str:
    env = {**os.environ, **app.env}
    done = subprocess.run([sys.executable, "-c", KILL_REPLICA, app.ray_address, deployment],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]


def wait_healthy(client: httpx.Client, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get("/api/v1/health").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail("the app did not become healthy again")


@pytest.fixture(scope="module")
def enrolled_person(client: httpx.Client, samples) -> str:
    response = client.post("/api/v1/enroll_identity", json={
        "tenant_id": "crash", "identity_id": "steady",
        "images_b64": [data_uri(samples[k]) for k in ENROLLMENT_PHOTOS]})
    assert response.status_code == 200
    return "steady"


def post(http: httpx.Client, path: str, body: dict) -> tuple[int, str]:
    """(status, detail code) of one call; an unreadable answer or a broken connection is
    recorded as such, so the assertions below see it instead of a dead worker thread."""
    try:
        response = http.post(path, json=body)
    except httpx.HTTPError as error:
        return 0, type(error).__name__
    if response.status_code == 200:
        return 200, "ok"
    try:
        return response.status_code, str(response.json().get("detail", ""))
    except ValueError:
        return response.status_code, response.text[:80]


def test_killed_embedder_recovers(serve_app: ServeProcess, client: httpx.Client, samples,
                                  enrolled_person: str) -> None:
    statuses: Counter[tuple[int, str]] = Counter()
    stop = threading.Event()
    body = {"tenant_id": "crash", "identity_id": enrolled_person, "image_b64": data_uri(samples["probe_same_person"])}

    def traffic() -> None:
        with httpx.Client(base_url=serve_app.url, timeout=60) as http:
            while not stop.is_set():
                statuses[post(http, "/api/v1/verify", body)] += 1

    workers = [threading.Thread(target=traffic) for _ in range(2)]
    for worker in workers:
        worker.start()
    time.sleep(2)
    killed = kill_replica(serve_app, "FaceEmbedder")
    wait_healthy(client)
    time.sleep(2)
    stop.set()
    for worker in workers:
        worker.join(timeout=120)

    total = sum(statuses.values())
    failures = {key: n for key, n in statuses.items() if key[0] != 200}
    assert statuses[(200, "ok")] > 0, statuses
    # A dead replica is an outage to retry (503), never a server error, and it is short.
    assert set(failures) <= {(503, "backend_unavailable")}, (killed, statuses)
    assert sum(failures.values()) <= total // 2, statuses
    after = client.post("/api/v1/verify", json=body)
    assert after.status_code == 200 and after.json()["verified"] is True


def test_killed_store_loses_no_acknowledged_enrollment(serve_app: ServeProcess, client: httpx.Client,
                                                       samples) -> None:
    photos = [data_uri(samples[k]) for k in ENROLLMENT_PHOTOS]
    acknowledged: list[str] = []
    refused: Counter[tuple[int, str]] = Counter()
    stop = threading.Event()

    def enroll_many() -> None:
        with httpx.Client(base_url=serve_app.url, timeout=60) as http:
            index = 0
            while not stop.is_set():
                identity = f"durable-{threading.get_ident()}-{index}"
                index += 1
                outcome = post(http, "/api/v1/enroll_identity", {
                    "tenant_id": "crash", "identity_id": identity, "images_b64": photos})
                if outcome[0] == 200:
                    acknowledged.append(identity)
                else:
                    refused[outcome] += 1

    worker = threading.Thread(target=enroll_many)
    worker.start()
    time.sleep(3)
    kill_replica(serve_app, "FaceStore")
    wait_healthy(client)
    time.sleep(2)
    stop.set()
    worker.join(timeout=120)

    assert len(acknowledged) >= 3
    assert set(refused) <= {(503, "backend_unavailable")}, refused
    for identity in acknowledged:
        response = client.post("/api/v1/verify", json={
            "tenant_id": "crash", "identity_id": identity, "image_b64": data_uri(samples["probe_same_person"])})
        assert response.status_code == 200, (identity, response.text)
        assert response.json()["verified"] is True
