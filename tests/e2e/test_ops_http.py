"""`face-ops` against the running Serve app (admin routes over HTTP), including a backup
taken while enrollments and ingestions keep arriving, restored into a fresh directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from serve_app.config import Settings
from loadtests.launcher import REPO_ROOT, ServeProcess
from serve_app.model_identity import model_identity
from serve_app.ops.cli import app
from serve_app.repository import FaceRepository
from serve_app.samples import data_uri, synthetic_gallery
from serve_app.vectordb.edge import EdgeStore

runner = CliRunner()


def face_ops(serve_app: ServeProcess, *args: str) -> tuple[int, dict | str]:
    result = runner.invoke(app, ["--url", serve_app.url, "--json", *args])
    output = result.output
    try:
        return result.exit_code, json.loads(output[output.index("{"):])
    except ValueError:
        return result.exit_code, output


def enroll(client: httpx.Client, samples: dict[str, bytes], tenant: str, identity: str) -> httpx.Response:
    return client.post("/api/v1/enroll_identity", json={
        "tenant_id": tenant, "identity_id": identity,
        "images_b64": [data_uri(samples[name]) for name in ("frontal", "left", "right")]})


def test_collections_show_and_ensure(serve_app: ServeProcess) -> None:
    code, shown = face_ops(serve_app, "collections", "show")
    assert code == 0, shown
    model = model_identity(Settings(_env_file=None)).as_dict()
    assert shown["engine"] == "qdrant-edge" and shown["model"] == model
    for entry in shown["collections"]:
        assert entry["exists"] and entry["dim"] == 512 and entry["distance"] == "Cosine"
        assert entry["missing_indexes"] == [] and entry["model"] == model
    assert set(shown["collections"][1]["indexes"]) == {"tenant_id", "identity_id"}
    code, ensured = face_ops(serve_app, "collections", "ensure")
    assert code == 0 and [c["missing_indexes"] for c in ensured["collections"]] == [[], []]


def test_identity_show_and_similarity_agree_with_verify(serve_app: ServeProcess, client: httpx.Client,
                                                        samples: dict[str, bytes], tmp_path: Path) -> None:
    assert enroll(client, samples, "ops-tenant", "ops-user-1").status_code == 200
    code, shown = face_ops(serve_app, "identity", "show", "--tenant", "ops-tenant", "--identity", "ops-user-1")
    assert code == 0, shown
    assert shown["template"]["images"] == 3 and len(shown["enrollment_faces"]) == 3
    assert "template_vector" not in shown or shown["template_vector"] is None

    for name, verified in (("probe_same_person", True), ("different_person", False)):
        probe = tmp_path / f"{name}.jpg"
        probe.write_bytes(samples[name])
        code, explained = face_ops(serve_app, "similarity", "-t", "ops-tenant", "-i", "ops-user-1",
                                   "--probe", str(probe))
        assert code == 0, explained
        answer = client.post("/api/v1/verify", json={"tenant_id": "ops-tenant", "identity_id": "ops-user-1",
                                                     "image_b64": data_uri(samples[name])}).json()
        assert explained["verified"] is answer["verified"] is verified
        assert explained["similarity"] == pytest.approx(answer["similarity"], abs=2e-3)
        assert len(explained["enrollment_photos"]) == 3
    code, missing = face_ops(serve_app, "identity", "show", "-t", "ops-tenant", "-i", "nobody")
    assert code == 1 and "identity_not_enrolled" in str(missing)


def test_plan_script_runs_verbatim_against_the_service(serve_app: ServeProcess, client: httpx.Client,
                                                       samples: dict[str, bytes], tmp_path: Path) -> None:
    assert enroll(client, samples, "test-tenant", "test-user-1").status_code == 200
    (tmp_path / "probe.jpg").write_bytes(samples["probe_same_person"])
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "test_similarity.py"),
                           "--identity", "test-user-1", "--probe", "probe.jpg"], cwd=tmp_path,
                          env={**os.environ, "FACE_OPS_URL": serve_app.url, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "verifies: similarity" in done.stdout and "enrollment photo 2" in done.stdout


def test_cleanup_dry_run_then_apply(serve_app: ServeProcess, client: httpx.Client, samples: dict[str, bytes]) -> None:
    for identity in ("tmp-1", "tmp-2", "keep-1"):
        assert enroll(client, samples, "ops-clean", identity).status_code == 200
    code, dry = face_ops(serve_app, "cleanup", "--tenant", "ops-clean", "--prefix", "tmp-")
    assert code == 0 and (dry["identities"], dry["enrollment_faces"], dry["applied"]) == (2, 6, False)
    code, done = face_ops(serve_app, "cleanup", "--tenant", "ops-clean", "--prefix", "tmp-", "--apply")
    assert code == 0 and (done["identities"], done["enrollment_faces"], done["applied"]) == (2, 6, True)
    probe = data_uri(samples["probe_same_person"])
    for identity, status in (("tmp-1", 404), ("tmp-2", 404), ("keep-1", 200)):
        response = client.post("/api/v1/verify", json={"tenant_id": "ops-clean", "identity_id": identity,
                                                       "image_b64": probe})
        assert response.status_code == status, identity


def test_backup_under_load_then_restore_loses_nothing(serve_app: ServeProcess, client: httpx.Client,
                                                     samples: dict[str, bytes], tmp_path: Path) -> None:
    tenant = "ops-backup"
    acked: list[tuple[float, str, object]] = []
    failures: list[str] = []
    stop = threading.Event()
    gallery = iter(synthetic_gallery(40, seed=7, size=320))
    lock = threading.Lock()

    def enroller(worker: int) -> None:
        with httpx.Client(base_url=serve_app.url, timeout=120) as http:
            step = 0
            while not stop.is_set():
                identity = f"b{worker}-{step}"
                response = enroll(http, samples, tenant, identity)
                if response.status_code != 200:
                    failures.append(f"enroll {identity}: {response.status_code} {response.text[:200]}")
                    return
                acked.append((time.monotonic(), "identity", identity))
                step += 1

    def ingester() -> None:
        with httpx.Client(base_url=serve_app.url, timeout=120) as http:
            while not stop.is_set():
                with lock:
                    item = next(gallery, None)
                if item is None:
                    return
                response = http.post("/api/v1/ingest", json={"tenant_id": tenant, "site": "load",
                                                             "image_b64": data_uri(item[1])})
                if response.status_code != 200:
                    failures.append(f"ingest {item[0]}: {response.status_code} {response.text[:200]}")
                    return
                acked.append((time.monotonic(), "image", (item[1], response.json()["face_ids"])))

    workers = [threading.Thread(target=enroller, args=(n,)) for n in range(2)] + [threading.Thread(target=ingester)]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 240
        while len(acked) < 6 and time.monotonic() < deadline and not failures:
            time.sleep(0.2)
        backup_sent = time.monotonic()
        code, made = face_ops(serve_app, "backup", "--name", "under-load")
        backup_returned = time.monotonic()
        # Reads are answered meanwhile and afterwards; writes keep being acknowledged.
        while sum(1 for t, _, _ in acked if t > backup_returned) < 3 and time.monotonic() < deadline and not failures:
            time.sleep(0.2)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=300)
    assert not failures, failures
    assert code == 0, made
    before = [entry for entry in acked if entry[0] < backup_sent]
    assert len(before) >= 6 and any(kind == "image" for _, kind, _ in before)
    manifest = made["manifest"]
    assert manifest["model"] == model_identity(Settings(_env_file=None)).as_dict()

    fresh = tmp_path / "restored"
    result = runner.invoke(app, ["--direct", "--json", "--data-dir", str(fresh), "restore", made["path"]])
    assert result.exit_code == 0, result.output
    copy = FaceRepository.for_settings(EdgeStore(fresh), Settings(_env_file=None))
    try:
        counts = {spec.name: copy.store.describe(spec.name).points for spec in copy.specs()}
        assert counts == {name: entry["points"] for name, entry in manifest["collections"].items()}
        for _, kind, what in before:
            if kind == "identity":
                assert copy.get_identity(tenant, str(what)) is not None, what
                assert len(copy.enrollment_faces(tenant, str(what))) == 3, what
            else:
                face_ids = what[1]  # type: ignore[index]
                assert len(copy.store.retrieve(copy.faces, face_ids)) == len(face_ids)
    finally:
        copy.store.close()

    # The service lost nothing either: every acknowledged write is still there.
    for _, kind, what in acked:
        if kind == "identity":
            code, shown = face_ops(serve_app, "identity", "show", "-t", tenant, "-i", str(what))
            assert code == 0, (what, shown)
        else:
            again = client.post("/api/v1/ingest", json={"tenant_id": tenant, "site": "load",
                                                        "image_b64": data_uri(what[0])})  # type: ignore[index]
            assert again.json()["status"] in ("already_ingested", "duplicate"), again.text


def test_profile_and_leaks(serve_app: ServeProcess) -> None:
    code, profiled = face_ops(serve_app, "profile", "--endpoint", "/api/v1/verify", "-n", "12", "--warmup", "2")
    assert code == 0, profiled
    assert profiled["ok"] == 12 and profiled["errors"] == {}
    latency = profiled["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["max"]
    # The service's Server-Timing stages, each seen on every answer, inside the total.
    stages = profiled["server_timing"]
    assert {"detect", "embed", "store", "total"} <= set(stages), stages
    assert all(values["seen"] == 12 for values in stages.values())
    assert stages["embed"]["mean"] < stages["total"]["mean"] <= latency["mean"]
    code, leaks = face_ops(serve_app, "leaks", "-n", "15", "-r", "2", "--warmup", "5", "-c", "2")
    assert isinstance(leaks, dict), leaks
    names = {p["name"] for p in leaks["processes"]}
    assert {"FaceEmbedder", "FaceStore", "Gateway", "ProxyActor"} <= names
    assert all(len(p["rounds"]) == 3 and p["rounds"][0]["fds"] > 0 for p in leaks["processes"])
    assert code == 0 and leaks["leak_suspected"] is False, leaks
