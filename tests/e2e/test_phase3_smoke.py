"""The deployment plan's Phase 3 smoke tests, replayed over HTTP against the real graph."""

from __future__ import annotations

import base64

import httpx
import pytest

from serve_app.samples import ENROLLMENT_PHOTOS, data_uri

TENANT = "test-tenant"


@pytest.fixture(scope="module")
def enrolled(client: httpx.Client, samples: dict[str, bytes]) -> dict:
    response = client.post("/api/v1/enroll_identity", json={
        "tenant_id": TENANT,
        "identity_id": "test-user-1",
        "images_b64": [data_uri(samples[name]) for name in ENROLLMENT_PHOTOS],
    })
    assert response.status_code == 200, response.text
    return response.json()


def test_health(client: httpx.Client) -> None:
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["service"] == "face-pipeline-search-api"
    assert body["components"]["embedder"]["provider"] == "CPUExecutionProvider"
    collections = body["components"]["store"]["collections"]
    assert set(collections["faces_v1"]["keyword_indexes"]) == {"tenant_id", "p_hash_prefix", "site", "identity_id",
                                                             "image_id"}
    assert set(collections["identities_v1"]["keyword_indexes"]) == {"tenant_id", "identity_id"}


def test_docs_and_openapi(client: httpx.Client) -> None:
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/health", "/api/v1/enroll_identity", "/api/v1/verify", "/api/v1/search"} <= set(paths)


def test_enrollment_answer(enrolled: dict) -> None:
    assert enrolled["ok"] is True
    assert enrolled["identity"] == {"tenant_id": TENANT, "identity_id": "test-user-1"}
    assert enrolled["vector_dim"] == 512
    assert enrolled["images_used"] == 3


def verify_enrolled(client: httpx.Client, probe: bytes) -> dict:
    """The plan's Step 3.3 request against the enrolled test-user-1 (threshold 0.78)."""
    response = client.post("/api/v1/verify", json={
        "tenant_id": TENANT, "identity_id": "test-user-1", "image_b64": data_uri(probe), "hi_threshold": 0.78,
    })
    assert response.status_code == 200, response.text
    return response.json()


def test_verify_same_person(client: httpx.Client, samples, enrolled) -> None:
    body = verify_enrolled(client, samples["probe_same_person"])
    assert body["verified"] is True
    assert 0.80 <= body["similarity"] <= 0.95  # the plan's "same person" range
    # Verification-first: the identity's gallery faces (its enrollment photos) come back.
    assert body["count"] == len(body["results"]) == 3
    assert all(hit["identity_id"] == "test-user-1" for hit in body["results"])


def test_verify_different_person(client: httpx.Client, samples, enrolled) -> None:
    body = verify_enrolled(client, samples["different_person"])
    assert body["verified"] is False
    assert body["similarity"] < 0.78
    assert body["results"] == [] and body["count"] == 0


def test_verify_unknown_identity_is_404(client: httpx.Client, samples, enrolled) -> None:
    response = client.post("/api/v1/verify", json={
        "tenant_id": TENANT, "identity_id": "non-existent",
        "image_b64": data_uri(samples["probe_same_person"]),
    })
    assert response.status_code == 404
    assert response.json()["detail"] == "identity_not_enrolled"


def test_legacy_search_finds_enrolled_face(client: httpx.Client, samples, enrolled) -> None:
    response = client.post("/api/v1/search", json={
        "tenant_id": TENANT, "image_b64": data_uri(samples["probe_same_person"]), "top_k": 10,
    })
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["count"] == len(body["hits"]) >= 1
    assert body["hits"][0]["identity_id"] == "test-user-1"
    assert body["hits"][0]["similarity"] >= 0.78
    assert body["query"]["tenant_id"] == TENANT


def test_bare_base64_and_tenant_header_work(client: httpx.Client, samples, enrolled) -> None:
    response = client.post("/api/v1/verify", headers={"X-Tenant-ID": TENANT}, json={
        "identity_id": "test-user-1", "image_b64": base64.b64encode(samples["probe_same_person"]).decode(),
    })
    assert response.status_code == 200, response.text
    assert response.json()["verified"] is True


def test_tenant_b_cannot_verify_or_find_tenant_a(client: httpx.Client, samples, enrolled) -> None:
    probe = data_uri(samples["probe_same_person"])
    verify = client.post("/api/v1/verify", json={"tenant_id": "tenant-b", "identity_id": "test-user-1",
                                                 "image_b64": probe})
    assert verify.status_code == 404 and verify.json()["detail"] == "identity_not_enrolled"
    search = client.post("/api/v1/search", json={"tenant_id": "tenant-b", "image_b64": probe, "top_k": 50})
    assert search.status_code == 200 and search.json()["count"] == 0
    mismatch = client.post("/api/v1/search", headers={"X-Tenant-ID": "tenant-b"},
                           json={"tenant_id": TENANT, "image_b64": probe, "top_k": 5})
    assert mismatch.status_code == 403 and mismatch.json()["detail"] == "tenant_mismatch"


def test_enrollment_of_two_people_is_refused(client: httpx.Client, samples) -> None:
    response = client.post("/api/v1/enroll_identity", json={
        "tenant_id": TENANT, "identity_id": "mixed-up",
        "images_b64": [data_uri(samples["frontal"]), data_uri(samples["different_person"])],
    })
    assert response.status_code == 422
    assert response.json()["detail"] == "enrollment_faces_disagree"


@pytest.mark.parametrize("image, code", [
    ("%%% not base64 %%%", "invalid_base64"),
    (base64.b64encode(b"just some text, not a picture").decode(), "not_an_image"),
    ("data:text/plain;base64,aGVsbG8=", "invalid_data_uri"),
])
def test_bad_images_get_clear_codes(client: httpx.Client, image: str, code: str) -> None:
    response = client.post("/api/v1/search", json={"tenant_id": TENANT, "image_b64": image, "top_k": 3})
    assert response.status_code == 422
    assert response.json()["detail"] == code


def test_photo_without_face_is_422(client: httpx.Client, samples) -> None:
    import cv2
    import numpy as np

    ok, blank = cv2.imencode(".png", np.full((120, 160, 3), 200, np.uint8))
    response = client.post("/api/v1/enroll_identity", json={
        "tenant_id": TENANT, "identity_id": "blank", "images_b64": [data_uri(samples["frontal"]),
                                                                   data_uri(blank.tobytes())],
    })
    assert response.status_code == 422
    assert response.json() == {"detail": "no_face_detected", "image_index": 1}
