"""The benchmark's own parts: the InsightFace-docs peer answers like the service, the
12 MP probe is what a phone writes, CPU roles are read from Ray's process titles, and
the gallery benchmark runs end to end on a small gallery. No timings are asserted."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageOps

from loadtests import bench_gallery
from loadtests.cpu_roles import Snapshot, per_request_ms, role_of
from loadtests.insightface_peer import build_app
from loadtests.phone_photo import EXIF_ORIENTATION, ROTATE_90_CW_TO_VIEW, phone_photo
from serve_app.config import Settings
from serve_app.samples import ENROLLMENT_PHOTOS, data_uri


def test_insightface_peer_enrolls_and_verifies_like_the_service(samples, tmp_path: Path):
    app, repository = build_app(Settings(_env_file=None, qdrant_path=tmp_path))
    try:
        with TestClient(app) as client:
            assert client.get("/api/v1/health").json()["components"]["embedder"]["provider"]
            enrolled = client.post("/api/v1/enroll_identity", json={
                "tenant_id": "t", "identity_id": "p",
                "images_b64": [data_uri(samples[name]) for name in ENROLLMENT_PHOTOS]})
            assert enrolled.status_code == 200
            answers = {name: client.post("/api/v1/verify", json={
                "tenant_id": "t", "identity_id": "p", "image_b64": data_uri(samples[name])}).json()
                for name in ("probe_same_person", "different_person")}
            assert answers["probe_same_person"]["verified"] is True
            assert answers["different_person"]["verified"] is False
            missing = client.post("/api/v1/verify", json={"tenant_id": "t", "identity_id": "nobody",
                                                          "image_b64": data_uri(samples["probe_same_person"])})
            assert missing.status_code == 404
    finally:
        repository.store.close()


def test_phone_probe_is_12_mp_stored_sideways_with_exif_orientation(samples):
    image = Image.open(io.BytesIO(phone_photo(samples["probe_same_person"])))
    assert image.format == "JPEG" and image.size == (4032, 3024)
    assert image.getexif()[EXIF_ORIENTATION] == ROTATE_90_CW_TO_VIEW
    assert ImageOps.exif_transpose(image).size == (3024, 4032)


@pytest.mark.parametrize("title, role", [
    ("ray::ServeReplica:face-pipeline:Gateway", "gateway"),
    ("ray::ServeReplica:face-pipeline:FaceEmbedder", "embedder"),
    ("ray::ServeReplica:face-pipeline:FaceStore", "store"),
    ("ray::ProxyActor", "proxy"),
    ("ray::ServeController", "controller"),
    ("/venv/lib/python3.11/site-packages/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/x", "gcs"),
    ("/venv/lib/python3.11/site-packages/ray/core/src/ray/raylet/raylet --node_ip_address=127.0.0.1", "raylet"),
    ("ray::DashboardAgent", "agents"),
    ("ray::IDLE", "idle_workers"),
    ("/venv/bin/python /venv/bin/serve run --address 127.0.0.1:1 x.yaml", "serve_cli"),
    ("something else", "other"),
])
def test_roles_from_ray_process_titles(title, role):
    assert role_of(title) == role


def test_cpu_per_request_by_role():
    before = Snapshot({1: 1.0, 2: 5.0}, {1: "gateway", 2: "gcs"})
    # pid 3 started during the window: all its CPU counts.
    after = Snapshot({1: 1.5, 2: 5.1, 3: 0.2}, {1: "gateway", 2: "gcs", 3: "raylet"})
    figures = per_request_ms(before, after, requests=10)
    assert figures["gateway"] == pytest.approx(50.0)
    assert figures["ray_system"] == pytest.approx(30.0)  # gcs 10 + raylet 20
    assert figures["total"] == pytest.approx(80.0)


def test_gallery_benchmark_runs_end_to_end_on_a_small_gallery(tmp_path: Path):
    figures = bench_gallery.main(["--faces", "1500", "--tenants", "3", "--identities", "10", "--queries", "10",
                                  "--int8", "--dir", str(tmp_path), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "gallery.json").is_file()
    assert figures["during_build"]["built"] and figures["index"]["int8"]
    # Brute force before any index is exact; the probes' identities are all enrolled.
    assert figures["plain"]["recall_at_10"] == 1.0
    assert 0.0 <= figures["indexed"]["recall_at_10"] <= 1.0
    assert figures["plain"]["verify"]["n"] == 10
    # Verify ranked the identity's tagged gallery faces (none before the gallery was loaded).
    assert figures["empty"]["verify_gallery_hits_mean"] == 0
    assert figures["plain"]["verify_gallery_hits_mean"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("face-bench-gallery-")]  # cleaned up
