"""API keys over HTTP, on a second app started as production runs it (AUTH_ENABLED=true)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from loadtests.launcher import ServeProcess
from serve_app.samples import ENROLLMENT_PHOTOS, data_uri
from tests.helpers import key_entry, write_keys

KEYS = {"acme": "acme-key-1", "globex": "globex-key-1", "admin": "ops-key-1"}


def write_keyring(path: Path, keys: dict[str, str]) -> None:
    write_keys(path, [key_entry(owner, key) for owner, key in keys.items()])


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, Path]]:
    directory = tmp_path_factory.mktemp("secured")
    keyfile = directory / "keys.json"
    write_keyring(keyfile, KEYS)
    app = ServeProcess(directory, env={"AUTH_ENABLED": "true", "API_KEYS_FILE": str(keyfile)})
    app.start()
    yield app, keyfile
    app.stop()


@pytest.fixture(scope="module")
def http(secured) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured[0].url, timeout=60) as client:
        yield client


def key(owner: str) -> dict[str, str]:
    return {"X-API-Key": KEYS[owner]}


def test_health_and_docs_need_no_key(http: httpx.Client) -> None:
    assert http.get("/api/v1/health").status_code == 200
    assert http.get("/openapi.json").status_code == 200


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/v1/enroll_identity", {"identity_id": "p", "images_b64": ["AAAA"]}),
    ("POST", "/api/v1/verify", {"identity_id": "p", "image_b64": "AAAA"}),
    ("POST", "/api/v1/search", {"image_b64": "AAAA"}),
    ("POST", "/api/v1/ingest", {"site": "s", "image_b64": "AAAA"}),
    ("DELETE", "/api/v1/identities/p", None),
    ("DELETE", "/api/v1/admin/tenants/acme", None),
])
def test_every_endpoint_needs_a_valid_key(http: httpx.Client, method, path, body) -> None:
    missing = http.request(method, path, json=body)
    assert missing.status_code == 401 and missing.json()["detail"] == "api_key_required"
    wrong = http.request(method, path, json=body, headers={"X-API-Key": "not-a-key"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "invalid_api_key"


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/v1/enroll_identity", {"tenant_id": "globex", "identity_id": "p", "images_b64": ["AAAA"]}),
    ("POST", "/api/v1/verify", {"tenant_id": "globex", "identity_id": "p", "image_b64": "AAAA"}),
    ("POST", "/api/v1/search", {"tenant_id": "globex", "image_b64": "AAAA"}),
    ("POST", "/api/v1/ingest", {"tenant_id": "globex", "site": "s", "image_b64": "AAAA"}),
])
def test_a_tenant_key_cannot_name_another_tenant(http: httpx.Client, method, path, body) -> None:
    in_body = http.request(method, path, json=body, headers=key("acme"))
    assert in_body.status_code == 403 and in_body.json()["detail"] == "tenant_mismatch"
    in_header = http.request(method, path, json={k: v for k, v in body.items() if k != "tenant_id"},
                             headers={**key("acme"), "X-Tenant-ID": "globex"})
    assert in_header.status_code == 403 and in_header.json()["detail"] == "tenant_mismatch"


def test_tenant_key_works_for_its_own_tenant_only(http: httpx.Client, samples) -> None:
    photos = [data_uri(samples[k]) for k in ENROLLMENT_PHOTOS]
    enrolled = http.post("/api/v1/enroll_identity", headers=key("acme"),
                         json={"identity_id": "alice", "images_b64": photos})
    assert enrolled.status_code == 200 and enrolled.json()["identity"]["tenant_id"] == "acme"
    probe = data_uri(samples["probe_same_person"])
    mine = http.post("/api/v1/verify", headers=key("acme"), json={"identity_id": "alice", "image_b64": probe})
    assert mine.json()["verified"] is True
    theirs = http.post("/api/v1/verify", headers=key("globex"), json={"identity_id": "alice", "image_b64": probe})
    assert theirs.status_code == 404
    assert http.delete("/api/v1/identities/alice", headers=key("globex")).status_code == 404


def test_threshold_floor_holds_with_auth(http: httpx.Client, samples) -> None:
    response = http.post("/api/v1/verify", headers=key("acme"), json={
        "identity_id": "alice", "image_b64": data_uri(samples["probe_same_person"]), "hi_threshold": 0.1})
    assert response.status_code == 422 and response.json()["detail"] == "threshold_below_floor"


def test_operator_endpoint_needs_the_admin_key(http: httpx.Client, samples) -> None:
    http.post("/api/v1/enroll_identity", headers=key("globex"),
              json={"identity_id": "bob", "images_b64": [data_uri(samples["frontal"])]})
    refused = http.delete("/api/v1/admin/tenants/globex", headers=key("globex"))
    assert refused.status_code == 403 and refused.json()["detail"] == "admin_required"
    purged = http.delete("/api/v1/admin/tenants/globex", headers=key("admin"))
    assert purged.status_code == 200 and purged.json()["identities_deleted"] == 1
    gone = http.post("/api/v1/verify", headers=key("globex"),
                     json={"identity_id": "bob", "image_b64": data_uri(samples["frontal"])})
    assert gone.status_code == 404


def test_keys_rotate_without_restart(secured, http: httpx.Client, samples) -> None:
    _, keyfile = secured
    write_keyring(keyfile, {**KEYS, "acme": "acme-key-2"})
    time.sleep(1.2)  # the key ring reads the file at most once a second (README "API keys")
    body = {"identity_id": "alice", "image_b64": data_uri(samples["probe_same_person"])}
    old = http.post("/api/v1/verify", headers={"X-API-Key": "acme-key-1"}, json=body)
    assert old.status_code == 401
    new = http.post("/api/v1/verify", headers={"X-API-Key": "acme-key-2"}, json=body)
    assert new.status_code == 200 and new.json()["verified"] is True


def test_face_ops_needs_the_admin_key(secured) -> None:
    """The operator's CLI over the secured app: the admin key works, a tenant key is refused."""
    from typer.testing import CliRunner

    from serve_app.ops.cli import app as face_ops

    app = secured[0]
    runner = CliRunner()
    allowed = runner.invoke(face_ops, ["--url", app.url, "--api-key", KEYS["admin"], "--json", "collections", "show"])
    assert allowed.exit_code == 0, allowed.output
    assert '"identities_v1"' in allowed.output
    refused = runner.invoke(face_ops, ["--url", app.url, "--api-key", KEYS["globex"], "collections", "show"])
    assert refused.exit_code == 1 and "admin_required" in refused.output
