"""Backup and restore on the embedded engine (real Qdrant Edge): consistent under
concurrent writes, nothing acknowledged lost, and restores of foreign snapshots refused."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from serve_app.backup import create_backup
from serve_app.config import Settings
from serve_app.model_identity import ensure_collections, model_identity
from serve_app.dedup import hash_bands
from serve_app.repository import FaceRepository, GalleryFace, point_id
from tests.test_ops_direct import enroll, ops, ops_json, open_repository, unit

MODEL = model_identity(Settings(_env_file=None))


def count(repository: FaceRepository, collection: str) -> int:
    return repository.store.count(collection, {"tenant_id": "load"})


def ingest(repository: FaceRepository, tenant: str, name: str, seed: int) -> None:
    """One gallery image with one face, as the ingest flow stores it (a distinct hash)."""
    p_hash = f"{(seed * 0x9E3779B97F4A7C15) % 2**64:016x}"
    payload = {"source": "ingest", "image_id": name, "p_hash": p_hash, "p_hash_prefix": hash_bands(p_hash)}
    repository.add_image(tenant, name, p_hash, [GalleryFace(point_id("face", tenant, name), unit(seed), payload)], 0)


def test_backup_under_concurrent_writes_loses_nothing_and_restores_whole(tmp_path: Path) -> None:
    repository = open_repository(tmp_path / "live")
    ensure_collections(repository, MODEL)
    acked: list[tuple[float, str, str, int]] = []  # (ack time, kind, id, photos)
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(worker: int) -> None:
        step = 0
        try:
            while not stop.is_set():
                identity = f"w{worker}-id{step // 2}"
                # Every identity is enrolled twice, with 3 then 2 photos: a snapshot that cut a
                # re-enrollment in half would hold a template whose photo count disagrees.
                photos = 3 if step % 2 == 0 else 2
                enroll(repository, "load", identity, [worker * 100_000 + step * 10 + i for i in range(photos)])
                acked.append((time.monotonic(), "identity", identity, photos))
                name = f"w{worker}-g{step}"
                ingest(repository, "load", name, worker * 100_000 + step)
                acked.append((time.monotonic(), "face", name, 1))
                step += 1
        except BaseException as error:  # the test fails on any write error
            errors.append(error)

    with ThreadPoolExecutor(4) as pool:
        for worker in range(4):
            pool.submit(writer, worker)
        time.sleep(1.0)
        backup_sent = time.monotonic()
        manifest = create_backup(repository, tmp_path / "backups" / "b1", MODEL)
        backup_returned = time.monotonic()
        time.sleep(0.5)
        stop.set()
    assert not errors
    before = [entry for entry in acked if entry[0] < backup_sent]
    after = [entry for entry in acked if entry[0] > backup_returned]
    assert len(before) > 20 and after, "the load must run before and after the backup"

    # Restore into a fresh data directory, through the CLI, with the service's settings.
    fresh = tmp_path / "restored"
    restored = ops_json(fresh, "restore", str(tmp_path / "backups" / "b1"))
    assert {name: c["points"] for name, c in restored["collections"].items()} == {
        name: entry.points for name, entry in manifest.collections.items()}
    copy = open_repository(fresh)
    try:
        for _, kind, ident, _ in before:  # every write acknowledged before the backup began
            if kind == "identity":
                assert copy.get_identity("load", ident) is not None, ident
            else:
                assert copy.store.retrieve(copy.faces, [point_id("face", "load", ident)]), ident
        # Whole enrollments only: each template has exactly the photos it was made from.
        for name in copy.identity_ids("load"):
            identity = copy.get_identity("load", name)
            assert identity is not None
            assert len(copy.enrollment_faces("load", name)) == identity.payload["images"], name
        assert count(copy, copy.identities) == manifest.collections["identities_v1"].points
        assert count(copy, copy.faces) == manifest.collections["faces_v1"].points
    finally:
        copy.store.close()

    # The live store kept every write, including those that waited for the copy.
    final = {(kind, ident) for _, kind, ident, _ in acked}
    assert count(repository, repository.identities) == len({i for k, i in final if k == "identity"})
    assert count(repository, repository.faces) == (len({i for k, i in final if k == "face"}) + sum(
        len(repository.enrollment_faces("load", i)) for k, i in final if k == "identity"))
    repository.store.close()


def test_a_snapshot_pauses_writes_but_not_reads(tmp_path: Path) -> None:
    repository = open_repository(tmp_path / "live")
    enroll(repository, "t", "alice", [1, 2])
    with ThreadPoolExecutor(2) as pool, repository.write_gate.exclusive():
        read = pool.submit(repository.get_identity, "t", "alice")
        write = pool.submit(enroll, repository, "t", "bob", [3])
        assert read.result(timeout=30) is not None  # answered while the snapshot holds the gate
        time.sleep(0.3)
        assert not write.done()
    write.result(timeout=30)
    assert repository.get_identity("t", "bob") is not None
    repository.store.close()


@pytest.fixture
def backup_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "live"
    repository = open_repository(data_dir)
    ensure_collections(repository, MODEL)
    enroll(repository, "t", "alice", [1, 2, 3])
    ingest(repository, "t", "g1", 9)
    repository.store.close()
    made = ops_json(data_dir, "backup", "--out", str(tmp_path / "backups"), "--name", "b1")
    assert made["manifest"]["collections"]["faces_v1"]["points"] == 4
    assert made["manifest"]["model"] == MODEL.as_dict()
    return tmp_path / "backups" / "b1"


def _edit_manifest(backup: Path, change) -> None:
    path = backup / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def test_restore_of_another_model_is_refused(backup_dir: Path, tmp_path: Path) -> None:
    _edit_manifest(backup_dir, lambda m: m["model"].update(sha256="0" * 64))
    code, output = ops(tmp_path / "fresh", "restore", str(backup_dir))
    assert code == 1 and "written by model" in output
    assert not any((tmp_path / "fresh").glob("*/edge_config.json"))


def test_restore_of_another_vector_size_is_refused(backup_dir: Path, tmp_path: Path) -> None:
    def shrink(manifest: dict) -> None:
        manifest["vector_dim"] = 128
        for entry in manifest["collections"].values():
            entry["dim"] = 128

    _edit_manifest(backup_dir, shrink)
    code, output = ops(tmp_path / "fresh", "restore", str(backup_dir))
    assert code == 1 and "128" in output and "VECTOR_DIM" in output


def test_restore_refuses_a_store_that_has_the_collections(backup_dir: Path, tmp_path: Path) -> None:
    code, output = ops(tmp_path / "live", "restore", str(backup_dir))
    assert code == 1 and "fresh data directory" in output


def test_restore_refuses_an_unfinished_backup(backup_dir: Path, tmp_path: Path) -> None:
    (backup_dir / "manifest.json").unlink()
    code, output = ops(tmp_path / "fresh", "restore", str(backup_dir))
    assert code == 1 and "no manifest.json" in output


def test_restore_round_trip_keeps_vectors(backup_dir: Path, tmp_path: Path) -> None:
    ops_json(tmp_path / "fresh", "restore", str(backup_dir))
    copy = open_repository(tmp_path / "fresh")
    try:
        identity = copy.get_identity("t", "alice")
        assert identity is not None
        expected = np.mean([unit(s) for s in (1, 2, 3)], axis=0)
        # Cosine collections store unit vectors.
        assert np.allclose(identity.template, expected / np.linalg.norm(expected), atol=1e-5)
        assert copy.describe_collections()[0].model == MODEL.as_dict()
    finally:
        copy.store.close()


def test_backup_copies_keep_the_shards_sparse(backup_dir: Path, tmp_path: Path) -> None:
    """Edge preallocates WAL segments and mmap files: the copy keeps their holes."""
    def sizes(root: Path) -> tuple[int, int]:
        files = [path.stat() for path in root.rglob("*") if path.is_file()]
        return sum(st.st_size for st in files), sum(st.st_blocks * 512 for st in files)

    apparent, on_disk = sizes(backup_dir / "faces_v1")
    live_apparent, live_on_disk = sizes(tmp_path / "live" / "faces_v1")
    assert apparent == live_apparent > 50 * 2**20
    assert on_disk < 4 * live_on_disk + 2**20 and on_disk < apparent / 10
