"""The shipped monitoring, proven on a real Prometheus scraping the running service.

A known mix of requests (successes, refusals of several kinds, a verification that
fails) is sent twice, each time in a fresh tenant. The first round creates every series
the mix touches; then a real `prometheus` starts with deploy/prometheus/prometheus.yml
(its file_sd list pointed at this app's metrics port, 2 s scrapes) and the second round
runs under its eyes. Through Prometheus's HTTP API: the counters grew by exactly the
second round, the plan's five queries give the ratios that round implies, and every
query of every dashboard panel returns what it should. Series that existed before
Prometheus's first scrape are what make `rate()` exact here: Prometheus cannot see the
first increments of a series born between two scrapes.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import yaml

from loadtests.launcher import ServeProcess, free_port
from serve_app.config import Settings
from serve_app.metrics import LATENCY_BUCKETS_S, SIMILARITY_BUCKETS
from serve_app.samples import data_uri

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "face-pipeline.json"
# The deployment plan's "Example Prometheus Queries", verbatim.
PLAN_QUERIES = {
    "Enrollment success rate": "rate(enrollment_success_total[5m]) / rate(enrollment_attempts_total[5m])",
    "Verification pass rate": "rate(verification_verified_total[5m]) / rate(verification_attempts_total[5m])",
    "Average similarity score": "avg(verification_similarity_score)",
    "P95 latency (enrollment)": "histogram_quantile(0.95, rate(enrollment_latency_seconds_bucket[5m]))",
    "P95 latency (verification)": "histogram_quantile(0.95, rate(verification_latency_seconds_bucket[5m]))",
}
# The second round is well inside 5 minutes of Prometheus's start: a 5 m window holds
# every sample Prometheus has, the first one (before the round) included.
WINDOW = "5m"
TIMED = ("enroll_identity", "verify", "search", "ingest")


# --- Prometheus ------------------------------------------------------------------------

class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        params = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=30) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return [({}, float(result[1]))]
        return [(sample["metric"], float(sample["value"][1])) for sample in result]

    def value(self, expr: str) -> float:
        samples = self.query(expr)
        assert len(samples) == 1, (expr, samples)
        return samples[0][1]

    def by(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {tuple(metric.get(label, "") for label in labels): value for metric, value in self.query(expr)}

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=30) as response:
            return json.load(response)


def render_config(tmp: Path, metrics_port: int) -> Path:
    """The shipped config, with 2 s scrapes and its file_sd list written for this app
    (Ray's head writes that list when its dashboard runs; the test app runs without)."""
    config = yaml.safe_load(CONFIG.read_text())
    # Ray's agent serves a few thousand lines; on a busy machine that can take over a
    # second, and a scrape may not outlast its interval.
    config["global"] = {"scrape_interval": "2s", "scrape_timeout": "2s", "evaluation_interval": "2s"}
    config["rule_files"] = [str(CONFIG.parent / path) for path in config["rule_files"]]
    targets = tmp / "prom_metrics_service_discovery.json"
    targets.write_text(json.dumps([{"labels": {"job": "ray"}, "targets": [f"127.0.0.1:{metrics_port}"]}]))
    job = config["scrape_configs"][0]
    assert job["file_sd_configs"] == [{"files": ["/tmp/ray/prom_metrics_service_discovery.json"]}]
    job["file_sd_configs"] = [{"files": [str(targets)]}]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    assert binary, "prometheus not found: apt-get install prometheus (README \"Monitoring\"; .ci/run installs it)"
    return binary


def start_prometheus(binary: str, tmp: Path, metrics_port: int) -> tuple[subprocess.Popen[bytes], Prometheus]:
    port = free_port()
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [binary, f"--config.file={render_config(tmp, metrics_port)}", f"--storage.tsdb.path={tmp / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = Prometheus(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2):
                return process, server
        except OSError:
            assert time.monotonic() < deadline, "Prometheus not ready in 60 s"
            time.sleep(0.3)


def wait_for(what: str, check: Callable[[], bool], timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


# --- the mix ---------------------------------------------------------------------------

@dataclass
class Round:
    """What one round of the mix sent, and what it must add to each metric."""

    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    similarities: list[float] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"enroll_identity": [], "verify": []})
    timings: list[tuple[str, int, dict[str, float]]] = field(default_factory=list)
    images_embedded: int = 0
    faces_embedded: int = 0

    def record(self, endpoint: str, response: httpx.Response, expected: int, code: str | None = None) -> None:
        assert response.status_code == expected, (endpoint, response.status_code, response.text[:300])
        self.requests[(endpoint, str(expected))] += 1
        if expected >= 400:
            assert code is not None and response.json()["detail"] == code, response.text[:300]
            self.errors[(endpoint, code)] += 1
        if endpoint in TIMED:
            timing = server_timing(response.headers["server-timing"])
            self.timings.append((endpoint, expected, timing))
            if endpoint in self.latencies:
                self.latencies[endpoint].append(timing["total"] / 1000)


def server_timing(header: str) -> dict[str, float]:
    entries = [entry.split(";dur=") for entry in header.split(", ")]
    return {name: float(value) for name, value in entries}


def send_round(client: httpx.Client, samples: dict[str, bytes], tenant: str) -> Round:
    sent = Round()
    photos = [data_uri(samples[name]) for name in ("frontal", "left", "right")]
    blank = data_uri(samples["blank"])

    def enroll(body: dict[str, Any], expected: int, code: str | None = None) -> httpx.Response:
        response = client.post("/api/v1/enroll_identity", json=body)
        sent.record("enroll_identity", response, expected, code)
        return response

    def verify(identity: str, photo: str, expected: int, code: str | None = None) -> httpx.Response:
        response = client.post("/api/v1/verify", json={"tenant_id": tenant, "identity_id": identity,
                                                       "image_b64": data_uri(samples[photo])})
        sent.record("verify", response, expected, code)
        if expected == 200:
            sent.similarities.append(response.json()["similarity"])
        return response

    enroll({"tenant_id": tenant, "identity_id": "alice", "images_b64": photos}, 200)
    enroll({"tenant_id": tenant, "identity_id": "bob", "images_b64": [data_uri(samples["different_person"])]}, 200)
    enroll({"tenant_id": tenant, "identity_id": "carol", "images_b64": []}, 422, "no_images")
    enroll({"tenant_id": tenant, "identity_id": "not valid", "images_b64": photos}, 422, "invalid_identity_id")
    enroll({"tenant_id": tenant, "identity_id": "dave", "images_b64": [blank]}, 422, "no_face_detected")
    assert verify("alice", "probe_same_person", 200).json()["verified"] is True
    assert verify("alice", "different_person", 200).json()["verified"] is False  # a verification that fails
    verify("nobody", "probe_same_person", 404, "identity_not_enrolled")
    malformed = client.post("/api/v1/verify", content=b"{not json", headers={"Content-Type": "application/json"})
    sent.record("verify", malformed, 422, "malformed_json")
    probe = data_uri(samples["probe_same_person"])
    sent.record("search", client.post("/api/v1/search", json={"tenant_id": tenant, "image_b64": probe,
                                                              "top_k": 0}), 422, "top_k_out_of_range")
    sent.record("search", client.post("/api/v1/search", json={"tenant_id": tenant, "image_b64": probe}), 200)
    oversized = b" " * (Settings(_env_file=None).max_request_bytes + 1)  # whitespace: valid JSON framing
    sent.record("search", client.post("/api/v1/search", content=oversized,
                                      headers={"Content-Type": "application/json"}), 413, "request_too_large")
    ingested = client.post("/api/v1/ingest", json={"tenant_id": tenant, "site": "example.org",
                                                   "image_b64": data_uri(samples["group"])})
    sent.record("ingest", ingested, 200)
    delete = client.delete
    sent.record("delete_identity", delete("/api/v1/identities/bob", headers={"X-Tenant-ID": tenant}), 200)
    sent.record("delete_identity", delete("/api/v1/identities/ghost", headers={"X-Tenant-ID": tenant}), 404,
                "identity_not_enrolled")
    sent.record("delete_tenant", delete(f"/api/v1/admin/tenants/{tenant}-void"), 200)
    sent.record("unmatched", client.get("/api/v1/no_such_route"), 404, "not_found")
    # Images that reached the models: 3 + 1 + 1 enrollment photos, 3 probes, 1 search, 1 ingest;
    # faces embedded: the enrollment and probe faces and every gallery face of the photo.
    sent.images_embedded = 10
    sent.faces_embedded = 3 + 1 + 0 + 3 + 1 + len(ingested.json()["face_ids"])
    return sent


# --- expectations ----------------------------------------------------------------------

def bucket_bounds(values: list[float], bounds: list[float]) -> tuple[float, float]:
    """The range a histogram quantile of these values can take: from the lower edge of
    the smallest value's bucket to the upper edge of the largest's. The values are the
    Server-Timing totals, rounded to 0.1 ms: a value that close to an edge may have been
    observed on either side of it."""
    rounding = 0.00005
    edges = [0.0, *bounds, math.inf]
    low = max(edge for edge in edges if edge < max(min(values) - rounding, 1e-9))
    high = min(edge for edge in edges if edge >= max(values) + rounding)
    return low, high


@dataclass
class Run:
    prometheus: Prometheus
    sent: Round
    health: dict[str, Any]


@pytest.fixture(scope="module")
def run(serve_app: ServeProcess, client: httpx.Client, samples: dict[str, bytes], prometheus_binary: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("prometheus")
    samples = {**samples, "blank": blank_png()}
    first = send_round(client, samples, "observe-1")
    metrics_url = f"http://127.0.0.1:{serve_app.metrics_port}/metrics"

    def exported(name: str, *labels: str) -> bool:
        with urllib.request.urlopen(metrics_url, timeout=10) as page:
            lines = page.read().decode().splitlines()
        return any(line.startswith(name + "{") and all(label in line for label in labels) for line in lines)

    # The round's last request is exported (the app reports every second: conftest.py),
    # then one more export interval for the other deployments' series.
    wait_for("the first round's metrics",
             lambda: exported("ray_api_requests_total", 'endpoint="unmatched"', 'status="404"'))
    time.sleep(2.5)
    process, prometheus = start_prometheus(prometheus_binary, tmp, serve_app.metrics_port)
    try:
        wait_for("two scrapes", lambda: prometheus.query('sum_over_time(up{job="ray"}[5m]) >= 2') != [])
        before = {name: prometheus.by(expr, *labels) for name, (expr, labels) in COUNTERS.items()}
        sent = send_round(client, samples, "observe-2")
        expected = expected_counters(sent)

        def grown() -> dict[str, dict[tuple[str, ...], float]]:
            now = {name: prometheus.by(expr, *labels) for name, (expr, labels) in COUNTERS.items()}
            return {name: {key: value - before[name].get(key, 0.0) for key, value in now[name].items()
                           if value - before[name].get(key, 0.0)} for name in COUNTERS}

        def settled() -> dict[str, dict[tuple[str, ...], float]]:
            return {name: counts for name, counts in grown().items() if name in expected}

        deadline = time.monotonic() + 60
        while settled() != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        targets = [(t["health"], t["lastError"]) for t in prometheus.get("/api/v1/targets")["data"]["activeTargets"]]
        assert settled() == expected, targets
        batches = grown()
        assert batches["batches"] == batches["serve_batches"]
        assert 1 <= batches["batches"][()] <= sent.images_embedded
        assert first.requests == sent.requests
        health = client.get("/api/v1/health").json()
        time.sleep(4)  # the collection gauges of the last writes, exported and scraped
        yield Run(prometheus, sent, health)
    finally:
        process.terminate()
        process.wait(timeout=30)


def blank_png() -> bytes:
    """A flat grey picture: decodes, has no face."""
    ok, blank = cv2.imencode(".png", np.full((120, 160, 3), 200, np.uint8))
    assert ok
    return blank.tobytes()


# Counters read before and after the second round: name -> (PromQL, labels of the key).
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "requests": ("sum by (endpoint, status) (api_requests_total)", ("endpoint", "status")),
    "errors": ("sum by (endpoint, code) (api_errors_total)", ("endpoint", "code")),
    "enrollment": ("sum(enrollment_attempts_total) or vector(0)", ()),
    "enrollment_success": ("sum(enrollment_success_total) or vector(0)", ()),
    "verification": ("sum(verification_attempts_total) or vector(0)", ()),
    "verified": ("sum(verification_verified_total) or vector(0)", ()),
    "latency_counts": ("sum by (outcome) (enrollment_latency_seconds_count)", ("outcome",)),
    "similarities": ("sum(verification_similarity_count) or vector(0)", ()),
    "images": ("sum(embedder_images_total) or vector(0)", ()),
    "faces": ("sum(embedder_faces_total) or vector(0)", ()),
    # Not known in advance (how requests fell into batches), but the two counts must agree.
    "batches": ("sum(embedder_batches_total) or vector(0)", ()),
    "serve_batches": ('sum(ray_serve_actual_batch_size_count{deployment="FaceEmbedder"}) or vector(0)', ()),
}


def expected_counters(sent: Round) -> dict[str, dict[tuple[str, ...], float]]:
    def count(endpoint: str, ok: bool | None = None) -> float:
        return float(sum(n for (name, status), n in sent.requests.items()
                         if name == endpoint and (ok is None or (status == "200") == ok)))

    return {
        "requests": {key: float(n) for key, n in sent.requests.items()},
        "errors": {key: float(n) for key, n in sent.errors.items()},
        "enrollment": {(): count("enroll_identity")},
        "enrollment_success": {(): count("enroll_identity", ok=True)},
        "verification": {(): count("verify")},
        "verified": {(): 1.0},
        "latency_counts": {("ok",): count("enroll_identity", ok=True), ("refused",): count("enroll_identity", ok=False)},
        "similarities": {(): float(len(sent.similarities))},
        "images": {(): float(sent.images_embedded)},
        "faces": {(): float(sent.faces_embedded)},
    }


# --- the tests -------------------------------------------------------------------------

def test_counts_are_exact_and_the_plan_queries_work_as_written(run: Run) -> None:
    """Reaching the fixture means every counter grew by exactly the second round
    (requests by endpoint and status, refusals by code, the plan's counters, latency
    observations, images and faces through the models)."""
    sent, prometheus = run.sent, run.prometheus
    enrollments = sum(n for (endpoint, _), n in sent.requests.items() if endpoint == "enroll_identity")
    verifications = sum(n for (endpoint, _), n in sent.requests.items() if endpoint == "verify")
    # A replica that died earlier in the session leaves series that no longer move (0/0: NaN).
    results = {title: [(metric, value) for metric, value in prometheus.query(expr) if not math.isnan(value)]
               for title, expr in PLAN_QUERIES.items()}
    print("\nThe plan's queries on a real Prometheus (one round: "
          f"{enrollments} enrollments, 2 stored; {verifications} verifications, 1 verified):")
    for title, samples in results.items():
        shown = ", ".join(f"{value:.4f}" + (f" ({metric['outcome']})" if "outcome" in metric else "")
                          for metric, value in samples)
        print(f"  {title}: {PLAN_QUERIES[title]}\n    -> {shown}")

    (_, success_rate), = results["Enrollment success rate"]
    assert success_rate == pytest.approx(2 / enrollments, rel=1e-9)
    (_, pass_rate), = results["Verification pass rate"]
    assert pass_rate == pytest.approx(1 / verifications, rel=1e-9)
    (_, similarity), = results["Average similarity score"]
    assert similarity == pytest.approx(sent.similarities[-1], abs=1e-4)  # the latest verification's
    for title, endpoint in (("P95 latency (enrollment)", "enroll_identity"), ("P95 latency (verification)", "verify")):
        by_outcome = {metric["outcome"]: value for metric, value in results[title]}
        ok_latencies = sent.latencies[endpoint][:2]  # each round's first two answers were 200s
        low, high = bucket_bounds(ok_latencies, LATENCY_BUCKETS_S)
        assert low <= by_outcome["ok"] <= high, (by_outcome, ok_latencies)
        assert "refused" in by_outcome


def panel_queries() -> list[tuple[str, str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target.get("legendFormat", ""),
             target["expr"].replace("$__rate_interval", WINDOW).replace("$__range", WINDOW))
            for panel in dashboard["panels"] if panel["type"] != "row" for target in panel["targets"]]


def test_every_dashboard_panel_shows_what_the_round_implies(run: Run) -> None:
    sent, prometheus = run.sent, run.prometheus
    collections = run.health["components"]["store"]["collections"]
    checked: set[str] = set()
    means: dict[str, float] = {}

    def one(expr: str) -> float:
        samples = [value for _, value in prometheus.query(expr)]
        assert len(samples) == 1, (expr, samples)
        return samples[0]

    for title, legend, expr in panel_queries():
        checked.add(title)
        if title == "Enrollment success rate":
            assert one(expr) == pytest.approx(2 / 5, rel=1e-9)
        elif title == "Verification pass rate":
            assert one(expr) == pytest.approx(1 / 4, rel=1e-9)
        elif title in ("Enrollment latency", "Verification latency"):
            endpoint = "enroll_identity" if title.startswith("Enroll") else "verify"
            low, high = bucket_bounds(sent.latencies[endpoint], LATENCY_BUCKETS_S)
            assert low <= one(expr) <= high, (title, legend, sent.latencies[endpoint])
        elif title == "Similarity score distribution":
            buckets = {metric["le"]: value for metric, value in prometheus.query(expr)}
            total = buckets["+Inf"]
            for bound in SIMILARITY_BUCKETS:
                share = sum(similarity <= bound for similarity in sent.similarities) / len(sent.similarities)
                assert buckets[str(bound)] / total == pytest.approx(share, abs=1e-9), (bound, buckets)
        elif title == "Error rate by type":
            shown = {metric["code"]: value for metric, value in prometheus.query(expr) if value > 0}
            codes = Counter[str]()
            for (_, code), n in sent.errors.items():
                codes[code] += n
            scale = shown["not_found"] / codes["not_found"]  # increase() extrapolates to the window
            assert {code: value / scale for code, value in shown.items()} == pytest.approx(dict(codes), rel=1e-9)
        elif title == "Collection sizes":
            assert one(expr) == collections["identities_v1"]["points"]
        elif title == "Request rate":
            shown = {(metric["endpoint"], metric["status"]): value for metric, value in prometheus.query(expr)
                     if value > 0}
            scale = shown[("unmatched", "404")] / sent.requests[("unmatched", "404")]
            assert {key: value / scale for key, value in shown.items()} == pytest.approx(
                {key: float(n) for key, n in sent.requests.items()}, rel=1e-9)
        elif title == "Server error ratio":
            assert one(expr) == 0.0  # the round has no 5xx (5xx are counted: tests/test_api.py)
        elif title == "Store latency (Qdrant), P95":
            shown = {(metric["operation"], metric["collection"]): value for metric, value in prometheus.query(expr)
                     if not math.isnan(value)}
            for key in (("upsert", "identities_v1"), ("upsert", "faces_v1"), ("search", "faces_v1"),
                        ("retrieve", "identities_v1"), ("delete_where", "faces_v1"), ("delete", "identities_v1")):
                assert 0 < shown[key] <= 1.0, (key, shown)
        elif title == "Embedder batch size":
            means[legend] = one(expr)
            # At most max_batch_size images; a quantile interpolates inside Ray's first bucket (0, 1].
            assert 0 < means[legend] <= (8 if "images" in legend else 64), (legend, means)
        elif title == "Embedder batch time, P95":
            shown = {metric.get("stage", "batch"): value for metric, value in prometheus.query(expr)}
            if legend == "batch":
                assert 0 < shown["batch"] <= 5, shown
            else:
                assert set(shown) == {"decode", "detect", "embed"} and all(0 < v <= 2.5 for v in shown.values())
        elif title == "Gallery faces":
            assert one(expr) == collections["faces_v1"]["points"]
        else:
            raise AssertionError(f"no expectation for panel {title!r}")
    assert checked == {panel["title"] for panel in json.loads(DASHBOARD.read_text())["panels"]
                       if panel["type"] != "row"}
    # Over the round, faces per image as sent.
    assert means["faces per batch"] / means["images per batch"] == pytest.approx(
        sent.faces_embedded / sent.images_embedded, rel=1e-9)


def test_server_timing_shows_where_the_time_went(run: Run) -> None:
    print("\nServer-Timing (ms) of the round's enrollments, verifications, searches and ingestion:")
    for endpoint, status, timing in run.sent.timings:
        assert list(timing) == ["decode", "detect", "embed", "store", "total"]
        print(f"  {endpoint} {status}: " + ", ".join(f"{stage} {ms:.1f}" for stage, ms in timing.items()))
    # A successful enrollment: base64 and image decoding, both models, the store writes.
    endpoint, status, enrolled = run.sent.timings[0]
    assert (endpoint, status) == ("enroll_identity", 200)
    assert all(enrolled[stage] > 0 for stage in ("decode", "detect", "embed", "store")), enrolled
    assert enrolled["total"] >= max(enrolled["store"], enrolled["detect"], enrolled["embed"])


def test_alert_rules_evaluate_on_the_live_metrics(run: Run) -> None:
    groups = run.prometheus.get("/api/v1/rules")["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 11
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
    firing = run.prometheus.query('ALERTS{alertstate="firing"}')
    assert firing == [], firing
