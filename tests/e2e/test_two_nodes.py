"""A real two-node Ray cluster on this machine: the head (Gateway, FaceStore, proxy) and a
worker node whose custom resource draws every FaceEmbedder replica to it. The app is
deployed with `serve deploy`, serves enroll/verify/search through the worker's replicas,
then the worker is killed while verifications flow: clients see only short-lived 503s,
and once a replacement node joins, Serve restarts the replicas there and every request
succeeds again. Prints each replica's node and the errors seen during the kill.
Then the plan's partial rollback, live: the verification flow is switched off and on by
redeploying the Gateway's user_config, and no replica restarts."""

from __future__ import annotations

import math
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from loadtests.launcher import DEFAULT_CONFIG, ServeProcess
from serve_app.flow_switch import with_verification_flow
from serve_app.samples import data_uri
from tests.e2e.test_crash_recovery import post

pytestmark = pytest.mark.e2e

RESOURCE = "embedder_node"
EMBEDDERS = 2
# Ray declares a node dead after missed health checks (about 15-30 s by default); checked
# each second, it notices the killed worker within a few seconds and Serve replaces its
# replicas sooner. A system setting of Ray, read from the environment of `ray start`.
FAST_NODE_FAILURE = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}


def two_node_config(directory: Path, verification_flow: bool | None = None) -> Path:
    """The local profile, with FaceEmbedder replicas asking for the worker's resource."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    embedder = next(d for d in config["applications"][0]["deployments"] if d["name"] == "FaceEmbedder")
    embedder.pop("autoscaling_config", None)
    embedder["num_replicas"] = EMBEDDERS
    # No CPU: the worker node has none to give, so nothing else can land on it.
    embedder["ray_actor_options"].update(num_cpus=0, resources={RESOURCE: 1})
    if verification_flow is not None:
        config = with_verification_flow(config, verification_flow)
    path = directory / f"two-node-{verification_flow}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def replica_nodes(app: ServeProcess) -> dict[str, list[tuple[str, str]]]:
    """deployment -> [(node_id, state)] of its replicas, from Serve's own view."""
    details = app.serve_details()
    deployments = details["applications"]["face-pipeline"]["deployments"]
    return {name: [(r.get("node_id") or "-", r["state"]) for r in d["replicas"]] for name, d in deployments.items()}


def wait_for(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")


def embedders_running_on(app: ServeProcess, node_id: str) -> bool:
    replicas = replica_nodes(app).get("FaceEmbedder", [])
    running = [node for node, state in replicas if state == "RUNNING"]
    return len(running) == EMBEDDERS and set(running) == {node_id}


def node_ids(app: ServeProcess, with_resource: bool) -> list[str]:
    """Alive nodes with (the worker) or without (the head) the embedders' resource."""
    return [str(n["node_id"]) for n in app.alive_nodes()
            if (RESOURCE in n.get("resources_total", {})) == with_resource]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    directory = tmp_path_factory.mktemp("two-node")
    app = ServeProcess(directory, env=dict(FAST_NODE_FAILURE))
    try:
        app.start_ray(time.monotonic() + 180, dashboard=True)
        app.add_node(num_cpus=0, resources={RESOURCE: EMBEDDERS})
        app.deploy(two_node_config(directory))
        app.wait_healthy(time.monotonic() + 300)
        yield app
    finally:
        app.stop()


def test_embedders_run_on_the_worker_and_move_to_a_new_node_when_it_dies(
        cluster: ServeProcess, samples: dict[str, bytes]) -> None:
    (head,) = node_ids(cluster, with_resource=False)
    (worker,) = node_ids(cluster, with_resource=True)
    status = cluster.serve_status()
    app_status = status["applications"]["face-pipeline"]
    assert app_status["status"] == "RUNNING", status
    assert all(d["status"] == "HEALTHY" for d in app_status["deployments"].values()), status
    nodes = replica_nodes(cluster)
    print(f"\nhead node {head[:12]}, worker node {worker[:12]}")
    for name, replicas in sorted(nodes.items()):
        print(f"  {name}: " + ", ".join(f"{node[:12]} ({state})" for node, state in replicas))
    assert embedders_running_on(cluster, worker)
    assert {node for node, _ in nodes["Gateway"] + nodes["FaceStore"]} == {head}

    with httpx.Client(base_url=cluster.url, timeout=60) as http:
        enrolled = http.post("/api/v1/enroll_identity", json={
            "tenant_id": "nodes", "identity_id": "alice",
            "images_b64": [data_uri(samples[k]) for k in ("frontal", "left", "right")]})
        assert enrolled.status_code == 200, enrolled.text
        probe = data_uri(samples["probe_same_person"])
        verify = {"tenant_id": "nodes", "identity_id": "alice", "image_b64": probe}
        answer = http.post("/api/v1/verify", json=verify).json()
        assert answer["verified"] is True, answer
        ingested = http.post("/api/v1/ingest", json={"tenant_id": "nodes", "site": "example.org",
                                                     "image_b64": data_uri(samples["frontal"])})
        assert ingested.status_code == 200, ingested.text
        hits = http.post("/api/v1/search", json={"tenant_id": "nodes", "image_b64": probe, "top_k": 5}).json()
        assert hits["count"] >= 1, hits

        # Verifications flow from one client while the worker node dies and is replaced.
        statuses: list[tuple[float, float, int, str]] = []  # (sent, answered, status, detail)
        stop = threading.Event()

        def client_loop() -> None:
            while not stop.is_set():
                sent = time.monotonic()
                code, detail = post(http, "/api/v1/verify", verify)
                statuses.append((sent, time.monotonic(), code, detail))

        loop = threading.Thread(target=client_loop)
        loop.start()
        try:
            time.sleep(2)
            killed_at = time.monotonic()
            cluster.nodes[0].kill()
            # A replacement node joins at once, as a cluster autoscaler would bring one.
            cluster.add_node(num_cpus=0, resources={RESOURCE: EMBEDDERS})
            replacement_at = time.monotonic()
            (replacement,) = set(node_ids(cluster, with_resource=True)) - {worker}
            wait_for(lambda: embedders_running_on(cluster, replacement), 300, "replicas on the new node")
            recovered_at = time.monotonic()
            time.sleep(2)
        finally:
            stop.set()
            loop.join(timeout=120)

    before = [code for _, answered, code, _ in statuses if answered < killed_at]
    after = [code for sent, _, code, _ in statuses if sent >= recovered_at]
    during = len(statuses) - len(before) - len(after)
    # The Serve proxy's own timeout answer names the request; count it by its kind.
    errors = Counter((code, "request_timeout" if code == 408 else detail) for _, _, code, detail in statuses
                     if code != 200)
    nodes = replica_nodes(cluster)
    print(f"worker {worker[:12]} killed; replacement node {replacement[:12]} joined "
          f"{replacement_at - killed_at:.1f}s later; replicas RUNNING there after "
          f"{recovered_at - killed_at:.1f}s")
    for name, replicas in sorted(nodes.items()):
        print(f"  {name}: " + ", ".join(f"{node[:12]} ({state})" for node, state in replicas))
    print(f"verify calls: {len(before)} answered before the kill, {during} around the outage, "
          f"{len(after)} sent after recovery; errors: {dict(errors) or 'none'}")
    assert before and set(before) == {200}
    # A request in flight on a dying replica fails fast and retryably (503); one that
    # arrives while no embedder exists waits for one, up to the proxy's request timeout
    # (408). Never a 500, and at most one timeout per request_timeout_s of outage.
    assert set(errors) <= {(503, "backend_unavailable"), (408, "request_timeout")}, errors
    timeout_s = yaml.safe_load(DEFAULT_CONFIG.read_text())["http_options"]["request_timeout_s"]
    assert errors[(408, "request_timeout")] <= math.ceil((recovered_at - killed_at) / timeout_s), errors
    assert errors[(503, "backend_unavailable")] <= 1, errors  # one client: one request in flight
    assert after and set(after) == {200}, Counter(after)
    assert embedders_running_on(cluster, replacement)


def replica_ids(app: ServeProcess) -> dict[str, set[str]]:
    deployments = app.serve_details()["applications"]["face-pipeline"]["deployments"]
    return {name: {r["replica_id"] for r in d["replicas"]} for name, d in deployments.items()}


def switch_flow(app: ServeProcess, http: httpx.Client, enabled: bool) -> None:
    app.deploy(two_node_config(app.data_dir, verification_flow=enabled))
    wait_for(lambda: http.get("/api/v1/health").json().get("verification_flow") is enabled, 120,
             f"health to show verification_flow={enabled}")


def test_verification_flow_switches_live_without_restarting_a_replica(
        cluster: ServeProcess, samples: dict[str, bytes]) -> None:
    probe = data_uri(samples["probe_same_person"])
    photos = [data_uri(samples[k]) for k in ("frontal", "left", "right")]
    before = replica_ids(cluster)
    with httpx.Client(base_url=cluster.url, timeout=60) as http:
        switch_flow(cluster, http, enabled=False)
        enroll = http.post("/api/v1/enroll_identity", json={"tenant_id": "nodes", "identity_id": "bob",
                                                            "images_b64": photos})
        verify = http.post("/api/v1/verify", json={"tenant_id": "nodes", "identity_id": "alice",
                                                   "image_b64": probe})
        for refused in (enroll, verify):
            assert (refused.status_code, refused.json()["detail"]) == (503, "verification_flow_disabled")
        search = http.post("/api/v1/search", json={"tenant_id": "nodes", "image_b64": probe, "top_k": 5})
        ingest = http.post("/api/v1/ingest", json={"tenant_id": "nodes", "site": "example.org",
                                                   "image_b64": data_uri(samples["group"])})
        assert search.status_code == 200 and search.json()["count"] >= 1, search.text
        assert ingest.status_code == 200, ingest.text
        health = http.get("/api/v1/health")
        assert health.status_code == 200 and health.json()["verification_flow"] is False
        switch_flow(cluster, http, enabled=True)
        verified = http.post("/api/v1/verify", json={"tenant_id": "nodes", "identity_id": "alice",
                                                     "image_b64": probe})
        assert verified.status_code == 200 and verified.json()["verified"] is True
    # reconfigure, not a restart: the very same replicas served throughout.
    assert replica_ids(cluster) == before
    print(f"\nverification flow off and on again; replicas unchanged: "
          f"{ {name: len(ids) for name, ids in before.items()} }")
