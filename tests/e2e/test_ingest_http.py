"""POST /api/v1/ingest over HTTP, and verification-first results from the gallery."""

from __future__ import annotations

import cv2
import httpx
import pytest

from serve_app.samples import adjust, crop_box, encode_jpeg, read_package_image, resize
from serve_app.samples import data_uri

TENANT = "gallery-tenant"


@pytest.fixture(scope="module")
def players():
    return read_package_image("players.jpg")


@pytest.fixture(scope="module")
def ingested(client: httpx.Client, players) -> dict:
    response = client.post("/api/v1/ingest", json={
        "tenant_id": TENANT, "site": "example.org", "url": "https://example.org/players.jpg",
        "image_b64": data_uri(encode_jpeg(players, 95)), "metadata": {"album": "team"},
    })
    assert response.status_code == 200, response.text
    return response.json()


def test_ingest_stores_every_face(ingested: dict) -> None:
    assert ingested["status"] == "ingested"
    assert ingested["count"] == len(ingested["face_ids"]) == len(ingested["faces"]) >= 15
    assert len(ingested["p_hash"]) == 16 and len(ingested["image_id"]) == 64


def test_resized_recompressed_copy_is_duplicate(client: httpx.Client, players, ingested) -> None:
    copy = encode_jpeg(resize(players, 0.5), quality=50)
    response = client.post("/api/v1/ingest", json={"tenant_id": TENANT, "site": "mirror.example",
                                                   "image_b64": data_uri(copy)})
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "duplicate" and body["count"] == 0
    assert body["duplicate_of"]["image_id"] == ingested["image_id"]
    assert body["duplicate_of"]["url"] == "https://example.org/players.jpg"


def test_enrolled_player_verifies_with_gallery_face(client: httpx.Client, players, ingested) -> None:
    target = ingested["faces"][2]
    box = tuple(target["box"][k] for k in ("x1", "y1", "x2", "y2"))
    crop = crop_box(players, box, margin=0.8)
    enrolled = client.post("/api/v1/enroll_identity", json={
        "tenant_id": TENANT, "identity_id": "player-3",
        "images_b64": [data_uri(encode_jpeg(crop)), data_uri(encode_jpeg(cv2.flip(crop, 1)))],
    })
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json()["gallery_faces_tagged"] == 1

    probe = encode_jpeg(adjust(resize(crop_box(players, box, margin=1.0), 1.3), brightness=15), quality=80)
    verified = client.post("/api/v1/verify", json={"tenant_id": TENANT, "identity_id": "player-3",
                                                   "image_b64": data_uri(probe)})
    body = verified.json()
    assert body["verified"] is True
    assert target["face_id"] in [hit["face_id"] for hit in body["results"]]
    assert body["count"] == len(body["results"])

    other_tenant = client.post("/api/v1/verify", json={"tenant_id": "someone-else", "identity_id": "player-3",
                                                       "image_b64": data_uri(probe)})
    assert other_tenant.status_code == 404


def test_ingest_refuses_bad_site_and_metadata(client: httpx.Client, players) -> None:
    image = data_uri(encode_jpeg(resize(players, 0.3)))
    bad_site = client.post("/api/v1/ingest", json={"tenant_id": TENANT, "site": "has space", "image_b64": image})
    assert bad_site.status_code == 422 and bad_site.json()["detail"] == "invalid_site"
    nested = client.post("/api/v1/ingest", json={"tenant_id": TENANT, "site": "s", "image_b64": image,
                                                 "metadata": {"deep": {"nested": 1}}})
    assert nested.status_code == 422 and nested.json()["detail"] == "invalid_metadata"
