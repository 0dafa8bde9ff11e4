"""Cross-tenant attempts on every endpoint, and erasure (auth off: tenant from X-Tenant-ID)."""

from __future__ import annotations

import httpx
import pytest

from serve_app.samples import ENROLLMENT_PHOTOS, encode_jpeg, read_package_image
from serve_app.samples import data_uri

A, B = "tenant-alpha", "tenant-beta"


@pytest.fixture(scope="module")
def alpha(client: httpx.Client, samples) -> dict:
    enrolled = client.post("/api/v1/enroll_identity", json={
        "tenant_id": A, "identity_id": "person", "images_b64": [data_uri(samples[k]) for k in ("frontal", "left")]})
    assert enrolled.status_code == 200
    gallery = client.post("/api/v1/ingest", json={
        "tenant_id": A, "site": "alpha.example", "image_b64": data_uri(samples["group"])})
    assert gallery.status_code == 200 and gallery.json()["status"] == "ingested"
    return gallery.json()


def test_other_tenant_sees_nothing_on_any_endpoint(client: httpx.Client, samples, alpha) -> None:
    probe = data_uri(samples["probe_same_person"])
    assert client.post("/api/v1/verify", json={"tenant_id": B, "identity_id": "person",
                                               "image_b64": probe}).status_code == 404
    search = client.post("/api/v1/search", json={"tenant_id": B, "image_b64": probe, "top_k": 100}).json()
    assert search["count"] == 0
    deleted = client.delete("/api/v1/identities/person", headers={"X-Tenant-ID": B})
    assert deleted.status_code == 404
    # B's copy of A's gallery photo is B's own image, not a duplicate of A's.
    again = client.post("/api/v1/ingest", json={"tenant_id": B, "site": "beta.example",
                                                "image_b64": data_uri(samples["group"])}).json()
    assert again["status"] == "ingested" and not set(again["face_ids"]) & set(alpha["face_ids"])
    # And A still has everything.
    assert client.post("/api/v1/verify", json={"tenant_id": A, "identity_id": "person",
                                               "image_b64": probe}).json()["verified"] is True


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/v1/enroll_identity", {"tenant_id": A, "identity_id": "p", "images_b64": ["AAAA"]}),
    ("POST", "/api/v1/verify", {"tenant_id": A, "identity_id": "p", "image_b64": "AAAA"}),
    ("POST", "/api/v1/search", {"tenant_id": A, "image_b64": "AAAA"}),
    ("POST", "/api/v1/ingest", {"tenant_id": A, "site": "s", "image_b64": "AAAA"}),
])
def test_header_and_body_tenants_must_agree(client: httpx.Client, method, path, body) -> None:
    response = client.request(method, path, json=body, headers={"X-Tenant-ID": B})
    assert response.status_code == 403 and response.json()["detail"] == "tenant_mismatch"


def test_erasing_an_identity_removes_it_everywhere(client: httpx.Client, samples) -> None:
    tenant = "erasure-tenant"
    photos = [data_uri(samples[k]) for k in ENROLLMENT_PHOTOS]
    assert client.post("/api/v1/enroll_identity", json={"tenant_id": tenant, "identity_id": "gone",
                                                        "images_b64": photos}).status_code == 200
    # A gallery photo of the same person, tagged at ingestion.
    portrait = encode_jpeg(read_package_image("yaoming.jpg"), 90)
    ingested = client.post("/api/v1/ingest", json={"tenant_id": tenant, "site": "s",
                                                   "image_b64": data_uri(portrait)}).json()
    assert ingested["faces"][0]["identity_id"] == "gone"

    erased = client.delete("/api/v1/identities/gone", headers={"X-Tenant-ID": tenant})
    assert erased.status_code == 200, erased.text
    assert erased.json() == {"deleted": True, "identity": {"tenant_id": tenant, "identity_id": "gone"},
                             "enrollment_faces_deleted": 3, "gallery_faces_untagged": 1}

    probe = data_uri(samples["probe_same_person"])
    verify = client.post("/api/v1/verify", json={"tenant_id": tenant, "identity_id": "gone", "image_b64": probe})
    assert verify.status_code == 404
    hits = client.post("/api/v1/search", json={"tenant_id": tenant, "image_b64": probe, "top_k": 50}).json()["hits"]
    assert all(hit["identity_id"] is None for hit in hits)
    assert all(hit.get("source") != "enrollment" for hit in hits)
    assert client.delete("/api/v1/identities/gone", headers={"X-Tenant-ID": tenant}).status_code == 404


def test_body_less_delete_needs_a_tenant(client: httpx.Client) -> None:
    response = client.delete("/api/v1/identities/someone")
    assert response.status_code == 422 and response.json()["detail"] == "tenant_id_required"


def test_operator_erases_a_whole_tenant(client: httpx.Client, samples) -> None:
    tenant = "purged-tenant"
    client.post("/api/v1/enroll_identity", json={"tenant_id": tenant, "identity_id": "p1",
                                                 "images_b64": [data_uri(samples["frontal"])]})
    client.post("/api/v1/ingest", json={"tenant_id": tenant, "site": "s", "image_b64": data_uri(samples["group"])})
    purged = client.delete(f"/api/v1/admin/tenants/{tenant}")
    assert purged.status_code == 200
    assert purged.json()["identities_deleted"] == 1 and purged.json()["faces_deleted"] == 7
    probe = data_uri(samples["probe_same_person"])
    assert client.post("/api/v1/search", json={"tenant_id": tenant, "image_b64": probe}).json()["count"] == 0
    assert client.post("/api/v1/verify", json={"tenant_id": tenant, "identity_id": "p1",
                                               "image_b64": probe}).status_code == 404
