"""Every route of the HTTP API in process: `create_app` with the fake embedder and a real
embedded store (Qdrant Edge in a temporary directory), through FastAPI's TestClient.

What needs the real graph (batching, crash recovery, restarts, Locust) stays in tests/e2e.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from ray.exceptions import RayActorError

from serve_app.auth import KeyRing
from serve_app.config import Settings
from serve_app.flows.ports import Ports, ThreadedRepository
from serve_app.metrics import ServiceMetrics
from serve_app.repository import FaceRepository
from serve_app.vectordb.edge import EdgeStore
from serve_app.web.app import Services, create_app
from tests.fakes import DIM, FakeEmbedder, Recorder, recorded_metrics
from tests.helpers import key_entry, write_keys


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ALICE = [b64(b"alice/1"), b64(b"alice/2"), b64(b"alice/3")]


class Api:
    """A TestClient over one app, and what it was built from."""

    def __init__(self, tmp_path: Path, **settings: object) -> None:
        self.settings = Settings(_env_file=None, vector_dim=DIM, qdrant_path=tmp_path / "q", **settings)
        self.repository = FaceRepository.for_settings(EdgeStore(self.settings.qdrant_path), self.settings)
        self.repository.ensure_all()
        self.embedder = FakeEmbedder()
        self.metrics: ServiceMetrics = recorded_metrics()
        store = ThreadedRepository(self.repository)
        app = create_app(Services(
            ports=Ports(self.embedder, store, self.settings),
            keys=KeyRing(self.settings.auth_enabled, self.settings.api_keys_file, self.settings.api_keys),
            metrics=self.metrics,
            components={"embedder": self.embedder, "store": store},
        ))
        self.client = TestClient(app)

    def errors(self) -> list[dict[str, str]]:
        recorder = self.metrics.errors
        assert isinstance(recorder, Recorder)
        return [call[2] for call in recorder.calls]  # type: ignore[misc]

    def close(self) -> None:
        self.client.close()
        self.repository.store.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    service = Api(tmp_path)
    yield service
    service.close()


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Api]:
    keyfile = tmp_path / "keys.json"
    write_keys(keyfile, [key_entry("acme", "acme-key"), key_entry("globex", "globex-key"),
                         key_entry("admin", "ops-key")])
    service = Api(tmp_path, auth_enabled=True, api_keys_file=keyfile)
    yield service
    service.close()


def enroll(api: Api, identity: str = "alice", tenant: str = "t1", photos: list[str] = ALICE) -> dict:
    response = api.client.post("/api/v1/enroll_identity",
                               json={"tenant_id": tenant, "identity_id": identity, "images_b64": photos})
    assert response.status_code == 200, response.text
    return response.json()


def test_health_reports_each_component(api: Api) -> None:
    response = api.client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["verification_flow"] is True
    assert body["components"]["embedder"]["provider"] == "fake"
    assert body["components"]["store"]["engine"] == "qdrant-edge"
    assert set(body["components"]["store"]["collections"]) == {"faces_v1", "identities_v1"}


def test_health_is_503_when_a_component_is_down(api: Api) -> None:
    async def broken() -> dict[str, object]:
        raise ConnectionError("store gone")

    api.embedder.health = broken  # type: ignore[method-assign]
    response = api.client.get("/api/v1/health")
    assert response.status_code == 503
    assert response.json()["components"]["embedder"] == {"status": "down", "error": "ConnectionError"}


def test_enroll_then_verify_same_and_other_person(api: Api) -> None:
    enrolled = enroll(api)
    assert enrolled["identity"] == {"tenant_id": "t1", "identity_id": "alice"}
    assert enrolled["vector_dim"] == DIM and enrolled["images_used"] == 3
    same = api.client.post("/api/v1/verify", json={"tenant_id": "t1", "identity_id": "alice",
                                                   "image_b64": b64(b"alice/9")}).json()
    assert same["verified"] is True and same["count"] == 3
    other = api.client.post("/api/v1/verify", json={"tenant_id": "t1", "identity_id": "alice",
                                                    "image_b64": b64(b"bob/1")}).json()
    assert other["verified"] is False and other["results"] == []
    assert len(api.metrics.verify_attempts.calls) == 2  # type: ignore[attr-defined]
    assert len(api.metrics.verify_verified.calls) == 1  # type: ignore[attr-defined]


def test_low_quality_enrollment_photo_is_422_with_its_measures(api: Api) -> None:
    response = api.client.post("/api/v1/enroll_identity", json={
        "tenant_id": "t1", "identity_id": "alice", "images_b64": [b64(b"alice/1"), b64(b"alice/blurred")]})
    assert response.status_code == 422
    assert response.json() == {"detail": "low_quality_image", "image_index": 1, "image_indexes": [1],
                               "failed": [{"measure": "sharpness", "value": 8.0, "limit": 30.0, "bound": "min"}]}
    assert api.errors() == [{"endpoint": "enroll_identity", "code": "low_quality_image"}]
    enrolled = enroll(api)
    assert enrolled["faces"][0]["quality"] == {"face_size": 100.0, "det_score": 0.9, "sharpness": 250.0,
                                               "brightness": 140.0, "clipped": 0.0, "yaw": 2.0, "pitch": -3.0}


def test_verify_unknown_identity_is_404_and_counted(api: Api) -> None:
    response = api.client.post("/api/v1/verify", json={"tenant_id": "t1", "identity_id": "nobody",
                                                       "image_b64": b64(b"alice/1")})
    assert response.status_code == 404
    assert response.json() == {"detail": "identity_not_enrolled", "identity_id": "nobody"}
    assert api.errors() == [{"endpoint": "verify", "code": "identity_not_enrolled"}]


def test_search_and_top_k_bounds(api: Api) -> None:
    enroll(api)
    found = api.client.post("/api/v1/search", json={"tenant_id": "t1", "image_b64": b64(b"alice/7"),
                                                    "top_k": 2}).json()
    assert found["count"] == 2 and found["query"]["top_k"] == 2
    refused = api.client.post("/api/v1/search", json={"tenant_id": "t1", "image_b64": b64(b"alice/7"),
                                                      "top_k": 0})
    assert refused.status_code == 422 and refused.json()["detail"] == "top_k_out_of_range"


def test_ingest_stores_then_recognises_a_retry(api: Api) -> None:
    enroll(api)
    body = {"tenant_id": "t1", "site": "example.org", "image_b64": b64(b"alice/5"), "metadata": {"k": "v"}}
    first = api.client.post("/api/v1/ingest", json=body).json()
    assert first["status"] == "ingested" and first["faces"][0]["identity_id"] == "alice"
    again = api.client.post("/api/v1/ingest", json=body).json()
    assert again["status"] == "already_ingested" and again["face_ids"] == first["face_ids"]


def test_delete_identity_then_404(api: Api) -> None:
    enroll(api)
    erased = api.client.delete("/api/v1/identities/alice", headers={"X-Tenant-ID": "t1"})
    assert erased.status_code == 200 and erased.json()["enrollment_faces_deleted"] == 3
    again = api.client.delete("/api/v1/identities/alice", headers={"X-Tenant-ID": "t1"})
    assert again.status_code == 404 and again.json()["detail"] == "identity_not_enrolled"
    assert {"endpoint": "delete_identity", "code": "identity_not_enrolled"} in api.errors()


def test_delete_tenant_erases_only_that_tenant(api: Api) -> None:
    enroll(api, tenant="t1")
    enroll(api, tenant="t2")
    erased = api.client.delete("/api/v1/admin/tenants/t1").json()
    assert erased == {"deleted": True, "tenant_id": "t1", "identities_deleted": 1, "faces_deleted": 3}
    assert api.repository.get_identity("t2", "alice") is not None


def test_body_and_header_tenants_must_agree(api: Api) -> None:
    response = api.client.post("/api/v1/verify", headers={"X-Tenant-ID": "t2"},
                               json={"tenant_id": "t1", "identity_id": "alice", "image_b64": b64(b"a")})
    assert response.status_code == 403 and response.json() == {"detail": "tenant_mismatch"}
    missing = api.client.post("/api/v1/verify", json={"identity_id": "alice", "image_b64": b64(b"a")})
    assert missing.status_code == 422 and missing.json()["detail"] == "tenant_id_required"


def test_validation_errors_have_stable_codes_and_are_counted(api: Api) -> None:
    bad = api.client.post("/api/v1/enroll_identity", json={"tenant_id": "t1", "identity_id": "a b",
                                                           "images_b64": ALICE})
    assert bad.status_code == 422 and bad.json()["detail"] == "invalid_identity_id"
    malformed = api.client.post("/api/v1/verify", content=b"{not json", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 422 and malformed.json()["detail"] == "malformed_json"
    assert api.errors() == [{"endpoint": "enroll_identity", "code": "invalid_identity_id"},
                            {"endpoint": "verify", "code": "malformed_json"}]
    assert len(api.metrics.enroll_attempts.calls) == 1  # type: ignore[attr-defined]


def test_oversized_body_is_413_and_counted(tmp_path: Path) -> None:
    service = Api(tmp_path, max_request_bytes=2048)
    try:
        response = service.client.post("/api/v1/search", json={"tenant_id": "t1", "image_b64": "A" * 4096})
        assert response.status_code == 413 and response.json()["detail"] == "request_too_large"
        assert service.errors() == [{"endpoint": "search", "code": "request_too_large"}]
    finally:
        service.close()


def test_disabled_flow_is_503_but_search_works(tmp_path: Path) -> None:
    service = Api(tmp_path, enable_verification_flow=False)
    try:
        refused = service.client.post("/api/v1/enroll_identity",
                                      json={"tenant_id": "t1", "identity_id": "a", "images_b64": ALICE})
        assert refused.status_code == 503 and refused.json()["detail"] == "verification_flow_disabled"
        assert service.client.get("/api/v1/health").json()["verification_flow"] is False
        search = service.client.post("/api/v1/search", json={"tenant_id": "t1", "image_b64": b64(b"a")})
        assert search.status_code == 200
    finally:
        service.close()


def test_missing_key_is_401_before_the_body_is_parsed(secured: Api) -> None:
    # Not even JSON: an unauthenticated caller gets 401, never a schema error.
    response = secured.client.post("/api/v1/verify", content=b"\x00garbage",
                                   headers={"Content-Type": "application/json"})
    assert response.status_code == 401 and response.json() == {"detail": "api_key_required"}
    wrong = secured.client.post("/api/v1/verify", content=b"{}", headers={"X-API-Key": "guess"})
    assert wrong.status_code == 401 and wrong.json() == {"detail": "invalid_api_key"}
    assert secured.embedder.calls == 0
    assert secured.errors() == [{"endpoint": "verify", "code": "api_key_required"},
                                {"endpoint": "verify", "code": "invalid_api_key"}]
    assert secured.client.get("/api/v1/health").status_code == 200  # probes need no key


def test_tenant_key_binds_its_tenant_and_admin_routes_need_admin(secured: Api) -> None:
    acme = {"X-API-Key": "acme-key"}
    enrolled = secured.client.post("/api/v1/enroll_identity", headers=acme,
                                   json={"identity_id": "alice", "images_b64": ALICE})
    assert enrolled.json()["identity"]["tenant_id"] == "acme"
    other = secured.client.post("/api/v1/verify", headers=acme,
                                json={"tenant_id": "globex", "identity_id": "alice", "image_b64": ALICE[0]})
    assert other.status_code == 403 and other.json()["detail"] == "tenant_mismatch"
    assert secured.client.delete("/api/v1/admin/tenants/acme", headers=acme).json() == {"detail": "admin_required"}
    erased = secured.client.delete("/api/v1/admin/tenants/acme", headers={"X-API-Key": "ops-key"})
    assert erased.status_code == 200 and erased.json()["identities_deleted"] == 1


def test_openapi_documents_the_key_and_every_route(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    assert {"/api/v1/health", "/api/v1/enroll_identity", "/api/v1/verify", "/api/v1/search", "/api/v1/ingest",
            "/api/v1/identities/{identity_id}", "/api/v1/admin/tenants/{tenant_id}"} <= set(schema["paths"])


def requests_counted(api: Api) -> list[dict[str, str]]:
    recorder = api.metrics.requests
    assert isinstance(recorder, Recorder)
    return [call[2] for call in recorder.calls]  # type: ignore[misc]


def test_every_answer_is_counted_once_by_endpoint_and_status(api: Api) -> None:
    enroll(api)
    api.client.post("/api/v1/enroll_identity", json={"tenant_id": "t1", "identity_id": "a b", "images_b64": ALICE})
    api.client.post("/api/v1/verify", json={"tenant_id": "t1", "identity_id": "nobody", "image_b64": b64(b"x/1")})
    api.client.post("/api/v1/search", json={"tenant_id": "t1", "image_b64": b64(b"alice/7"), "top_k": 0})
    api.client.post("/api/v1/ingest", json={"tenant_id": "t1", "site": "s", "image_b64": b64(b"noface")})
    api.client.delete("/api/v1/identities/alice", headers={"X-Tenant-ID": "t1"})
    api.client.delete("/api/v1/identities/alice", headers={"X-Tenant-ID": "t1"})
    api.client.delete("/api/v1/admin/tenants/t1")
    api.client.get("/api/v1/no_such_route")
    api.client.get("/api/v1/health")  # a probe: not API traffic

    async def crash(request: object) -> object:
        raise RuntimeError("bug")

    async def outage(request: object) -> object:
        raise RayActorError()

    # As a server answers a crash (500), not as the test client re-raises it.
    with TestClient(api.client.app, raise_server_exceptions=False) as server:
        for failure in (crash, outage):
            api.embedder.embed = failure  # type: ignore[method-assign,assignment]
            server.post("/api/v1/verify", json={"tenant_id": "t1", "identity_id": "x", "image_b64": b64(b"x/1")})
    assert requests_counted(api) == [
        {"endpoint": "enroll_identity", "status": "200"}, {"endpoint": "enroll_identity", "status": "422"},
        {"endpoint": "verify", "status": "404"}, {"endpoint": "search", "status": "422"},
        {"endpoint": "ingest", "status": "422"},
        {"endpoint": "delete_identity", "status": "200"}, {"endpoint": "delete_identity", "status": "404"},
        {"endpoint": "delete_tenant", "status": "200"}, {"endpoint": "unmatched", "status": "404"},
        {"endpoint": "verify", "status": "500"}, {"endpoint": "verify", "status": "503"},
    ]
    assert api.errors()[-2:] == [{"endpoint": "verify", "code": "internal_error"},
                                 {"endpoint": "verify", "code": "backend_unavailable"}]
    latency = api.metrics.verify_latency
    assert isinstance(latency, Recorder)
    assert [call[2] for call in latency.calls] == [{"outcome": "refused"}, {"outcome": "failed"},
                                                   {"outcome": "failed"}]


def test_health_probe_sets_each_components_gauge(api: Api) -> None:
    async def broken() -> dict[str, object]:
        raise ConnectionError("store gone")

    api.client.get("/api/v1/health")
    api.embedder.health = broken  # type: ignore[method-assign]
    api.client.get("/api/v1/health")
    gauge = api.metrics.component_healthy
    assert isinstance(gauge, Recorder)
    assert [(call[1], call[2]) for call in gauge.calls] == [
        (1.0, {"component": "embedder"}), (1.0, {"component": "store"}),
        (0.0, {"component": "embedder"}), (1.0, {"component": "store"})]


def server_timing(header: str) -> dict[str, float]:
    entries = [entry.split(";dur=") for entry in header.split(", ")]
    return {name: float(value) for name, value in entries}


def test_model_endpoints_answer_with_server_timing(api: Api) -> None:
    enrolled = api.client.post("/api/v1/enroll_identity",
                               json={"tenant_id": "t1", "identity_id": "alice", "images_b64": ALICE})
    refused = api.client.post("/api/v1/verify", json={"tenant_id": "t1", "identity_id": "alice",
                                                      "image_b64": b64(b"noface")})
    searched = api.client.post("/api/v1/search", json={"tenant_id": "t1", "image_b64": b64(b"alice/7")})
    ingested = api.client.post("/api/v1/ingest", json={"tenant_id": "t1", "site": "s", "image_b64": b64(b"alice/5")})
    for response in (enrolled, refused, searched, ingested):
        timing = server_timing(response.headers["server-timing"])
        assert list(timing) == ["decode", "detect", "embed", "store", "total"], response.headers
        assert timing["total"] >= max(timing["decode"], timing["store"]) and timing["total"] > 0
    assert refused.status_code == 422
    erased = api.client.delete("/api/v1/identities/alice", headers={"X-Tenant-ID": "t1"})
    assert "server-timing" not in erased.headers
    assert "server-timing" not in api.client.get("/api/v1/health").headers


def test_error_answers_never_echo_large_or_unsafe_input(api: Api) -> None:
    field = "x" * 200_000
    unknown = api.client.post("/api/v1/search", json={"tenant_id": "t1", "image_b64": b64(b"a"), field: 1})
    assert unknown.status_code == 422 and unknown.json()["detail"] == "unknown_field"
    assert len(unknown.content) < 2_000
    mime = "image/" + "<script>" * 100_000
    refused = api.client.post("/api/v1/search", json={"tenant_id": "t1", "image_b64": f"data:{mime};base64,AAAA"})
    assert refused.status_code == 422 and len(refused.content) < 2_000
    assert "<script>" not in refused.text


def test_nan_and_infinity_in_metadata_are_422(api: Api) -> None:
    for token in ("NaN", "Infinity", "-Infinity"):
        body = ('{"tenant_id": "t1", "site": "s", "image_b64": "%s", "metadata": {"score": %s}}'
                % (b64(b"alice/1"), token))
        response = api.client.post("/api/v1/ingest", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 422 and response.json()["detail"] == "invalid_metadata", token


def test_no_redirect_is_built_from_the_host_header(api: Api) -> None:
    response = api.client.get("/api/v1/health/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404 and "location" not in response.headers


def test_head_on_health(api: Api) -> None:
    response = api.client.head("/api/v1/health")
    assert response.status_code == 200 and response.content == b""


def test_api_docs_load_without_a_cdn(api: Api) -> None:
    for page in ("/docs", "/redoc"):
        html = api.client.get(page).text
        assert "cdn." not in html and "unpkg" not in html, page
        scripts = [part.split('"')[0] for part in html.split('src="')[1:]]
        assert scripts, page
        for script in scripts:
            assert script.startswith("/"), script
            asset = api.client.get(script)
            assert asset.status_code == 200 and len(asset.content) > 100_000, script


def test_rate_limit_per_key_answers_429_with_retry_after(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys.json"
    write_keys(keyfile, [key_entry("acme", "acme-key"), key_entry("globex", "globex-key")])
    service = Api(tmp_path, auth_enabled=True, api_keys_file=keyfile, rate_limit_per_s=0.5, rate_limit_burst=3)
    try:
        body = {"image_b64": b64(b"alice/1")}
        answers = [service.client.post("/api/v1/search", json=body, headers={"X-API-Key": "acme-key"})
                   for _ in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert answers[3].json()["detail"] == "rate_limited" and int(answers[3].headers["Retry-After"]) >= 1
        # Another key is not slowed by acme's burst.
        other = service.client.post("/api/v1/search", json=body, headers={"X-API-Key": "globex-key"})
        assert other.status_code == 200
        assert {"endpoint": "search", "code": "rate_limited"} in service.errors()
    finally:
        service.close()


def test_health_reports_a_broken_key_file_but_stays_up(secured: Api) -> None:
    assert secured.client.get("/api/v1/health").json()["auth"]["keys_file"] == "ok"
    assert secured.settings.api_keys_file is not None
    secured.settings.api_keys_file.write_text("[]")
    time.sleep(1.1)  # the key ring re-reads the file at most once a second
    health = secured.client.get("/api/v1/health")
    assert health.status_code == 200 and health.json()["auth"]["keys_file"].startswith("invalid")
    assert secured.client.post("/api/v1/search", json={"image_b64": b64(b"a")},
                               headers={"X-API-Key": "acme-key"}).status_code == 200
