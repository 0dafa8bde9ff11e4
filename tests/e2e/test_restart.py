"""Acknowledged data survives a restart of the whole app (embedded store, same QDRANT_PATH)."""

from __future__ import annotations

import httpx

from loadtests.launcher import ServeProcess
from serve_app.samples import ENROLLMENT_PHOTOS, data_uri


def test_enrollment_survives_restart(serve_app: ServeProcess, client: httpx.Client, samples) -> None:
    enrolled = client.post("/api/v1/enroll_identity", json={
        "tenant_id": "restart-tenant", "identity_id": "persisted",
        "images_b64": [data_uri(samples[name]) for name in ENROLLMENT_PHOTOS],
    })
    assert enrolled.status_code == 200, enrolled.text

    serve_app.stop()
    serve_app.start()

    verified = client.post("/api/v1/verify", json={
        "tenant_id": "restart-tenant", "identity_id": "persisted",
        "image_b64": data_uri(samples["probe_same_person"]),
    })
    assert verified.status_code == 200, verified.text
    assert verified.json()["verified"] is True
    assert verified.json()["count"] == 3
