"""The operator routes in process: `create_app` with the fake embedder, a real Qdrant Edge
store in a temp directory and the in-process `ThreadedAdmin`, through TestClient."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serve_app.auth import KeyRing
from serve_app.config import Settings
from serve_app.flows.ports import Ports, ThreadedAdmin, ThreadedRepository
from serve_app.model_identity import ModelIdentity
from serve_app.repository import FaceRepository
from serve_app.vectordb.edge import EdgeStore
from serve_app.web.app import Services, create_app
from tests.fakes import DIM, FakeEmbedder, recorded_metrics
from tests.helpers import key_entry, write_keys

MODEL = ModelIdentity("fake.onnx", "ab" * 32, DIM)
ADMIN = "/api/v1/admin"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class AdminApi:
    def __init__(self, tmp_path: Path, with_admin: bool = True, **settings: object) -> None:
        self.settings = Settings(_env_file=None, vector_dim=DIM, qdrant_path=tmp_path / "q",
                                 backup_dir=tmp_path / "backups", **settings)
        self.repository = FaceRepository.for_settings(EdgeStore(self.settings.qdrant_path), self.settings)
        self.repository.ensure_all()  # as before this release: no model recorded yet
        store = ThreadedRepository(self.repository)
        embedder = FakeEmbedder()
        self.admin = ThreadedAdmin(self.repository, self.settings, MODEL)
        self.client = TestClient(create_app(Services(
            ports=Ports(embedder, store, self.settings),
            keys=KeyRing(self.settings.auth_enabled, self.settings.api_keys_file, self.settings.api_keys),
            metrics=recorded_metrics(),
            components={"embedder": embedder, "store": store},
            admin=self.admin if with_admin else None,
        )))

    def enroll(self, identity: str, tenant: str = "t1", person: str = "alice") -> None:
        response = self.client.post("/api/v1/enroll_identity", json={
            "tenant_id": tenant, "identity_id": identity, "images_b64": [b64(f"{person}/{i}".encode()) for i in (1, 2, 3)]})
        assert response.status_code == 200, response.text

    def close(self) -> None:
        self.client.close()
        self.repository.store.close()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[AdminApi]:
    service = AdminApi(tmp_path)
    yield service
    service.close()


def test_collections_show_and_ensure_record_the_model(api: AdminApi) -> None:
    shown = api.client.get(f"{ADMIN}/collections").json()
    assert shown["engine"] == "qdrant-edge" and shown["model"] == MODEL.as_dict()
    assert [(c["name"], c["exists"], c["dim"], c["model"]) for c in shown["collections"]] == [
        ("faces_v1", True, DIM, None), ("identities_v1", True, DIM, None)]
    ensured = api.client.post(f"{ADMIN}/collections/ensure").json()
    assert [c["model"] for c in ensured["collections"]] == [MODEL.as_dict()] * 2
    assert api.client.get(f"{ADMIN}/collections").json() == ensured


def test_identity_detail_per_tenant(api: AdminApi) -> None:
    api.enroll("alice")
    detail = api.client.get(f"{ADMIN}/tenants/t1/identities/alice").json()
    assert detail["template"]["images"] == 3 and len(detail["enrollment_faces"]) == 3
    assert detail["template_vector"] is None and detail["gallery_faces_tagged"] == 0
    with_vectors = api.client.get(f"{ADMIN}/tenants/t1/identities/alice", params={"vectors": "true"}).json()
    assert len(with_vectors["template_vector"]) == DIM
    assert all(len(face["vector"]) == DIM for face in with_vectors["enrollment_faces"])
    for path in ("t2/identities/alice", "t1/identities/bob"):
        missing = api.client.get(f"{ADMIN}/tenants/{path}")
        assert missing.status_code == 404 and missing.json()["detail"] == "identity_not_enrolled"


def test_similarity_explains_what_verify_decides(api: AdminApi) -> None:
    api.enroll("alice")
    for probe, verified in ((b"alice/9", True), (b"bob/1", False)):
        explained = api.client.post(f"{ADMIN}/tenants/t1/identities/alice/similarity",
                                    json={"image_b64": b64(probe)}).json()
        answer = api.client.post("/api/v1/verify", json={"tenant_id": "t1", "identity_id": "alice",
                                                         "image_b64": b64(probe)}).json()
        assert explained["verified"] is answer["verified"] is verified
        assert explained["similarity"] == answer["similarity"] and explained["threshold"] == answer["threshold"]
        assert explained["margin"] == pytest.approx(explained["similarity"] - explained["threshold"], abs=1e-4)
        assert [p["image_index"] for p in explained["enrollment_photos"]] == [0, 1, 2]
    raised = api.client.post(f"{ADMIN}/tenants/t1/identities/alice/similarity",
                             json={"image_b64": b64(b"alice/9"), "hi_threshold": 0.99}).json()
    assert raised["verified"] is False and raised["reason"].startswith("does not verify")
    for body, code in (({"image_b64": "%%%"}, "invalid_base64"), ({"image_b64": b64(b"noface")}, "no_face_detected"),
                       ({"image_b64": b64(b"alice/1"), "hi_threshold": 0.1}, "threshold_below_floor")):
        refused = api.client.post(f"{ADMIN}/tenants/t1/identities/alice/similarity", json=body)
        assert refused.status_code == 422 and refused.json()["detail"] == code


def test_cleanup_counts_then_removes_the_prefix_only(api: AdminApi) -> None:
    for identity in ("test-1", "test-2", "real-1"):
        api.enroll(identity)
    api.enroll("test-1", tenant="t2")
    dry = api.client.post(f"{ADMIN}/tenants/t1/cleanup", json={"prefix": "test-"}).json()
    assert (dry["identities"], dry["enrollment_faces"], dry["applied"]) == (2, 6, False)
    done = api.client.post(f"{ADMIN}/tenants/t1/cleanup", json={"prefix": "test-", "apply": True}).json()
    assert (done["identities"], done["enrollment_faces"], done["applied"]) == (2, 6, True)
    assert api.repository.identity_ids("t1") == ["real-1"]
    assert api.repository.identity_ids("t2") == ["test-1"]
    refused = api.client.post(f"{ADMIN}/tenants/t1/cleanup", json={"prefix": "../"})
    assert refused.status_code == 422


def test_backup_writes_under_backup_dir_and_refuses_bad_requests(api: AdminApi, tmp_path: Path) -> None:
    api.enroll("alice")
    made = api.client.post(f"{ADMIN}/backup", json={"name": "b1"}).json()
    assert Path(made["path"]) == (tmp_path / "backups" / "b1").resolve()
    assert (Path(made["path"]) / "manifest.json").is_file()
    assert made["manifest"]["collections"]["identities_v1"]["points"] == 1
    assert made["manifest"]["collections"]["faces_v1"]["points"] == 3
    assert made["manifest"]["model"] == MODEL.as_dict()
    for body, status, code in (({"name": "b1"}, 409, "backup_exists"),
                               ({"collections": ["nope"]}, 422, "unknown_collection"),
                               ({"name": "../escape"}, 422, None), ({"name": "b2", "extra": 1}, 422, "unknown_field")):
        refused = api.client.post(f"{ADMIN}/backup", json=body)
        assert refused.status_code == status, body
        if code:
            assert refused.json()["detail"] == code
    assert not (tmp_path / "escape").exists()
    only = api.client.post(f"{ADMIN}/backup", json={"name": "faces-only", "collections": ["faces_v1"]}).json()
    assert list(only["manifest"]["collections"]) == ["faces_v1"]


def test_admin_routes_need_the_admin_key(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys.json"
    write_keys(keyfile, [key_entry("t1", "t1-key"), key_entry("admin", "ops-key")])
    service = AdminApi(tmp_path, auth_enabled=True, api_keys_file=keyfile)
    try:
        calls = [("GET", f"{ADMIN}/collections", None), ("POST", f"{ADMIN}/collections/ensure", None),
                 ("GET", f"{ADMIN}/tenants/t1/identities/alice", None),
                 ("POST", f"{ADMIN}/tenants/t1/identities/alice/similarity", {"image_b64": b64(b"alice/1")}),
                 ("POST", f"{ADMIN}/tenants/t1/cleanup", {"apply": True}), ("POST", f"{ADMIN}/backup", {})]
        for method, path, body in calls:
            assert service.client.request(method, path, json=body).status_code == 401, path
            tenant = service.client.request(method, path, json=body, headers={"X-API-Key": "t1-key"})
            assert tenant.status_code == 403 and tenant.json()["detail"] == "admin_required", path
        allowed = service.client.get(f"{ADMIN}/collections", headers={"X-API-Key": "ops-key"})
        assert allowed.status_code == 200
    finally:
        service.close()


def test_without_an_admin_port_the_routes_answer_503(tmp_path: Path) -> None:
    service = AdminApi(tmp_path, with_admin=False)
    try:
        response = service.client.get(f"{ADMIN}/collections")
        assert response.status_code == 503 and response.json()["detail"] == "admin_unavailable"
    finally:
        service.close()


def test_a_refusal_raised_inside_a_deployment_keeps_its_code_and_status(api: AdminApi) -> None:
    """Through Serve, the FaceStore's DomainError arrives wrapped in Ray's RayTaskError."""
    from ray.exceptions import RayTaskError

    from serve_app.errors import DomainError

    async def refused(name: str | None, collections: list[str] | None) -> None:
        raise RayTaskError("backup", "traceback", DomainError("backup_exists", 409, name=name)).as_instanceof_cause()

    api.admin.backup = refused  # type: ignore[method-assign,assignment]
    response = api.client.post(f"{ADMIN}/backup", json={"name": "again"})
    assert response.status_code == 409 and response.json() == {"detail": "backup_exists", "name": "again"}
