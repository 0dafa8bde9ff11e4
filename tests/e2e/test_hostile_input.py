"""Every class of bad input gets a 4xx with its stable code; nothing produces a 5xx."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serve_app.samples import data_uri
from tests.hostile_images import corpus

TENANT = "hostile"
CASES = corpus()


@pytest.mark.parametrize("name, data, status, code", CASES, ids=[case[0] for case in CASES])
def test_hostile_images(client: httpx.Client, name: str, data: bytes, status, code) -> None:
    response = client.post("/api/v1/search", json={"tenant_id": TENANT, "image_b64": data_uri(data), "top_k": 5})
    assert response.status_code < 500, (name, response.text)
    assert "Traceback" not in response.text
    if status is None:
        # Decodable: a face is found (200), or the one refusal a face-less photo earns.
        assert response.status_code == 200 or response.json()["detail"] in {"no_face_detected", "face_too_small"}
        if name in {"grayscale", "rgba", "cmyk_jpeg", "webp", "bmp", "exif_rotated", "sixteen_bit",
                    "animated_webp", "exif_rational_as_text", "mpo", "heic", "avif"}:
            assert response.status_code == 200, (name, response.text)
    else:
        assert response.status_code == status, (name, response.text)
        if code:
            assert response.json()["detail"] == code


def post(client: httpx.Client, path: str, body, **kwargs) -> httpx.Response:
    return client.post(path, json=body, **kwargs)


@pytest.mark.parametrize("path, body, status, code", [
    ("/api/v1/enroll_identity", {"tenant_id": TENANT, "identity_id": "x", "images_b64": []}, 422, "no_images"),
    ("/api/v1/enroll_identity", {"tenant_id": TENANT, "identity_id": "x", "images_b64": ["AAAA"] * 11},
     422, "too_many_images"),
    ("/api/v1/search", {"tenant_id": TENANT, "image_b64": "AAAA", "top_k": 0}, 422, "top_k_out_of_range"),
    ("/api/v1/search", {"tenant_id": TENANT, "image_b64": "AAAA", "top_k": 10_000}, 422, "top_k_out_of_range"),
    ("/api/v1/search", {"tenant_id": TENANT, "image_b64": "AAAA", "top_k": "many"}, 422, "invalid_top_k"),
    ("/api/v1/search", {"tenant_id": "bad tenant!", "image_b64": "AAAA"}, 422, "invalid_tenant_id"),
    ("/api/v1/search", {"tenant_id": "t" * 65, "image_b64": "AAAA"}, 422, "invalid_tenant_id"),
    ("/api/v1/search", {"image_b64": "AAAA"}, 422, "tenant_id_required"),
    ("/api/v1/verify", {"tenant_id": TENANT, "identity_id": "../etc/passwd", "image_b64": "AAAA"},
     422, "invalid_identity_id"),
    ("/api/v1/verify", {"tenant_id": TENANT, "identity_id": "i" * 129, "image_b64": "AAAA"},
     422, "invalid_identity_id"),
    ("/api/v1/verify", {"tenant_id": TENANT, "identity_id": "x", "image_b64": "AAAA", "hi_threshold": 0.5},
     422, "threshold_below_floor"),
    ("/api/v1/verify", {"tenant_id": TENANT, "identity_id": "x", "image_b64": "AAAA", "hi_threshold": 7},
     422, "invalid_threshold"),
    ("/api/v1/verify", {"tenant_id": TENANT, "identity_id": "x", "image_b64": "AAAA", "extra": 1},
     422, "unknown_field"),
    ("/api/v1/verify", [1, 2, 3], 422, None),
    ("/api/v1/search", {"tenant_id": TENANT, "image_b64": "data:image/png;base64"}, 422, "invalid_data_uri"),
    ("/api/v1/search", {"tenant_id": TENANT, "image_b64": ""}, 422, "empty_image"),
    ("/api/v1/search", {"tenant_id": TENANT, "image_b64": "A" * (14 * 1024 * 1024)}, 413, "image_too_large"),
    ("/api/v1/ingest", {"tenant_id": TENANT, "site": "s", "image_b64": "AAAA",
                        "metadata": {f"k{i}": i for i in range(40)}}, 422, "too_many_metadata_fields"),
])
def test_refusals_have_stable_codes(client: httpx.Client, path, body, status, code) -> None:
    response = post(client, path, body)
    assert response.status_code == status, response.text[:500]
    if code:
        assert response.json()["detail"] == code
    assert "AAAA" not in response.text  # inputs are never echoed back


def test_malformed_json_and_wrong_routes(client: httpx.Client) -> None:
    broken = client.post("/api/v1/search", content=b"{not json", headers={"Content-Type": "application/json"})
    assert broken.status_code == 422 and broken.json()["detail"] == "malformed_json"
    assert client.get("/api/v1/nowhere").json() == {"detail": "not_found"}
    assert client.get("/api/v1/verify").status_code == 405


def test_oversized_request_body_is_413(client: httpx.Client) -> None:
    huge = json.dumps({"tenant_id": TENANT, "identity_id": "x",
                       "images_b64": ["A" * (5 * 1024 * 1024)] * 9}).encode()
    response = client.post("/api/v1/enroll_identity", content=huge, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and response.json()["detail"] == "request_too_large"


def test_oversized_chunked_body_is_a_readable_413(client: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(48):  # 48 MiB, no Content-Length: refused while it streams
            yield b"A" * (1024 * 1024)

    for _ in range(2):
        response = client.post("/api/v1/search", content=chunks(), headers={"Content-Type": "application/json",
                                                                             "X-Tenant-ID": TENANT})
        assert response.status_code == 413 and response.json()["detail"] == "request_too_large"


def test_enrollment_photo_errors_name_the_photo(client: httpx.Client, samples) -> None:
    response = post(client, "/api/v1/enroll_identity", {
        "tenant_id": TENANT, "identity_id": "x",
        "images_b64": [data_uri(samples["frontal"]), base64.b64encode(b"GIF89a....").decode()]})
    assert response.status_code == 422
    assert response.json()["image_index"] == 1


def test_hostile_images_do_not_fail_neighbouring_requests(client: httpx.Client, samples) -> None:
    """Every hostile image sent at once with legitimate verifies (so they share the
    embedder's batches): each hostile image gets its own answer, every verify its 200.
    A crafted EXIF block used to fail whole batches (18 of 60 neighbours got 500)."""
    enrolled = post(client, "/api/v1/enroll_identity", {
        "tenant_id": TENANT, "identity_id": "neighbour",
        "images_b64": [data_uri(samples[name]) for name in ("frontal", "left", "right")]})
    assert enrolled.status_code == 200, enrolled.text
    verify = {"tenant_id": TENANT, "identity_id": "neighbour", "image_b64": data_uri(samples["probe_same_person"])}
    jobs = [("verify", "/api/v1/verify", verify, 200, None)] * 12
    jobs += [(name, "/api/v1/search", {"tenant_id": TENANT, "image_b64": data_uri(data), "top_k": 5}, status, code)
             for name, data, status, code in CASES]
    jobs = jobs * 2

    def send(job):
        return job, client.post(job[1], json=job[2])

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(send, jobs))
    for (name, _, _, status, code), response in answers:
        assert response.status_code < 500, (name, response.text)
        if name == "verify":
            assert response.status_code == 200 and response.json()["verified"] is True, response.text
        elif status is not None:
            assert response.status_code == status, (name, response.text)
            if code:
                assert response.json()["detail"] == code, (name, response.text)
