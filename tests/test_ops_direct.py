"""`face-ops` on a stopped embedded store: a real Qdrant Edge store in a temp directory,
opened by the CLI itself (--direct)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from serve_app.config import Settings
from serve_app.model_identity import model_identity
from serve_app.ops.cli import app, split_global
from serve_app.repository import FACE_INDEXES, IDENTITY_INDEXES, FaceRepository, GalleryFace, point_id
from serve_app.vectordb.base import Record
from serve_app.vectordb.edge import EdgeStore

REPO_ROOT = Path(__file__).resolve().parent.parent
DIM = 512
runner = CliRunner()


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def ops(data_dir: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--direct", "--json", "--data-dir", str(data_dir), *args])
    return result.exit_code, result.output


def ops_json(data_dir: Path, *args: str) -> dict:
    code, output = ops(data_dir, *args)
    assert code == 0, output
    return json.loads(output[output.index("{"):])


def open_repository(data_dir: Path) -> FaceRepository:
    repository = FaceRepository.for_settings(EdgeStore(data_dir), Settings(_env_file=None))
    repository.ensure_all()
    return repository


def enroll(repository: FaceRepository, tenant: str, identity: str, seeds: list[int]) -> None:
    faces = [GalleryFace(point_id("enrollment", tenant, identity, str(i)), unit(seed),
                         {"image_index": i, "det_score": 0.9}) for i, seed in enumerate(seeds)]
    template = np.mean([unit(seed) for seed in seeds], axis=0)
    repository.save_identity(tenant, identity, template, faces, {"images": len(seeds)})


def tag_gallery_face(repository: FaceRepository, tenant: str, name: str, identity: str | None, seed: int) -> None:
    payload = {"tenant_id": tenant, "source": "ingest", "image_id": name}
    if identity:
        payload |= {"identity_id": identity, "identity_score": 0.8}
    repository.store.upsert(repository.faces, [Record(point_id("face", tenant, name), payload, unit(seed))])


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    data_dir = tmp_path / "qdrant"
    repository = open_repository(data_dir)
    enroll(repository, "test-tenant", "test-user-1", [1, 2, 3])
    enroll(repository, "test-tenant", "test-user-2", [4, 5])
    enroll(repository, "test-tenant", "keep-me", [6])
    enroll(repository, "other", "test-user-1", [7])
    tag_gallery_face(repository, "test-tenant", "g1", "test-user-1", 1)
    tag_gallery_face(repository, "test-tenant", "g2", None, 8)
    repository.store.close()
    return data_dir


def test_show_creates_nothing_and_ensure_creates_collections_indexes_and_model(tmp_path: Path) -> None:
    data_dir = tmp_path / "qdrant"
    shown = ops_json(data_dir, "collections", "show")
    assert [c["exists"] for c in shown["collections"]] == [False, False]
    assert not any(data_dir.glob("*/edge_config.json"))

    ensured = ops_json(data_dir, "collections", "ensure")
    model = model_identity(Settings(_env_file=None)).as_dict()
    by_name = {c["name"]: c for c in ensured["collections"]}
    assert by_name["faces_v1"]["indexes"] == {name: "keyword" for name in sorted(FACE_INDEXES)}
    assert by_name["identities_v1"]["indexes"] == {name: "keyword" for name in sorted(IDENTITY_INDEXES)}
    for entry in by_name.values():
        assert (entry["dim"], entry["distance"], entry["points"], entry["missing_indexes"]) == (DIM, "Cosine", 0, [])
        assert entry["indexed_vectors"] == 0 and entry["model"] == model
    # Idempotent, and what `show` then reads from disk is the same.
    assert ops_json(data_dir, "collections", "ensure")["collections"] == ensured["collections"]
    assert ops_json(data_dir, "collections", "show")["collections"] == ensured["collections"]


def test_show_names_a_missing_index(tmp_path: Path) -> None:
    from serve_app.vectordb.base import CollectionSpec

    data_dir = tmp_path / "qdrant"
    store = EdgeStore(data_dir)
    store.ensure_collection(CollectionSpec("identities_v1", DIM, ("tenant_id",)))
    store.close()
    shown = {c["name"]: c for c in ops_json(data_dir, "collections", "show")["collections"]}
    assert shown["identities_v1"]["missing_indexes"] == ["identity_id"]
    assert shown["faces_v1"]["exists"] is False
    ensured = {c["name"]: c for c in ops_json(data_dir, "collections", "ensure")["collections"]}
    assert ensured["identities_v1"]["missing_indexes"] == []


def test_identity_show(populated: Path) -> None:
    shown = ops_json(populated, "identity", "show", "--identity", "test-user-1", "--tenant", "test-tenant")
    assert shown["template"]["identity_id"] == "test-user-1" and shown["template"]["images"] == 3
    assert [face["image_index"] for face in shown["enrollment_faces"]] == [0, 1, 2]
    assert shown["gallery_faces_tagged"] == 1
    assert shown["template_vector"] is None and all("vector" not in f for f in shown["enrollment_faces"])
    with_vectors = ops_json(populated, "identity", "show", "-i", "test-user-1", "-t", "test-tenant", "--vectors")
    template = np.array(with_vectors["template_vector"])
    expected = np.mean([unit(s) for s in (1, 2, 3)], axis=0)
    assert np.allclose(template / np.linalg.norm(template), expected / np.linalg.norm(expected), atol=1e-4)
    code, output = ops(populated, "identity", "show", "-i", "nobody", "-t", "test-tenant")
    assert code == 1 and "identity_not_enrolled" in output


def test_cleanup_dry_run_counts_then_apply_removes_only_the_prefix(populated: Path) -> None:
    dry = ops_json(populated, "cleanup", "--tenant", "test-tenant", "--prefix", "test-")
    assert (dry["identities"], dry["enrollment_faces"], dry["gallery_faces_tagged"], dry["applied"]) == (2, 5, 1, False)
    assert dry["identity_ids"] == ["test-user-1", "test-user-2"]
    # A dry run removed nothing.
    assert ops_json(populated, "cleanup", "--tenant", "test-tenant", "--prefix", "test-") == dry

    done = ops_json(populated, "cleanup", "--tenant", "test-tenant", "--prefix", "test-", "--apply")
    assert (done["identities"], done["enrollment_faces"], done["gallery_faces_tagged"], done["applied"]) == (2, 5, 1, True)
    repository = open_repository(populated)
    try:
        assert repository.get_identity("test-tenant", "test-user-1") is None
        assert repository.get_identity("test-tenant", "keep-me") is not None
        assert repository.get_identity("other", "test-user-1") is not None  # another tenant
        assert repository.store.count(repository.faces, {"tenant_id": "test-tenant"}) == 3  # keep-me's photo and both gallery faces
        untagged = repository.store.retrieve(repository.faces, [point_id("face", "test-tenant", "g1")])[0]
        assert "identity_id" not in untagged.payload
    finally:
        repository.store.close()


def test_a_store_held_by_a_running_process_is_refused_clearly(populated: Path) -> None:
    holder = open_repository(populated)  # holds the shards' WAL locks, as the service does
    try:
        code, output = ops(populated, "identity", "show", "-i", "test-user-1", "-t", "test-tenant")
        assert code == 1
        assert "held by a running service" in output
        assert "Traceback" not in output
    finally:
        holder.store.close()


def test_global_options_move_before_the_command() -> None:
    assert split_global(["--tenant", "t", "--url=http://x", "--json", "--data-dir", "d"]) == (
        ["--url=http://x", "--json", "--data-dir", "d"], ["--tenant", "t"])


def test_plan_script_runs_verbatim(tmp_path: Path) -> None:
    data_dir = tmp_path / "qdrant"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "QDRANT_PATH": str(data_dir)}
    done = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "create_identities_collection.py"),
                           "--direct", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    names = {c["name"]: c["exists"] for c in json.loads(done.stdout)["collections"]}
    assert names == {"faces_v1": True, "identities_v1": True}


def test_similarity_explains_a_match_and_a_different_person(tmp_path: Path, pipeline, samples) -> None:
    import asyncio

    from serve_app.flows import enroll as enroll_flow
    from serve_app.flows.ports import PipelineEmbedder, Ports, ThreadedRepository

    data_dir = tmp_path / "qdrant"
    settings = Settings(_env_file=None)
    repository = open_repository(data_dir)
    ports = Ports(PipelineEmbedder(pipeline), ThreadedRepository(repository), settings)
    asyncio.run(enroll_flow.enroll_identity(ports, "test-tenant", "test-user-1",
                                            [samples["frontal"], samples["left"], samples["right"]]))
    repository.store.close()
    for name in ("probe_same_person", "different_person"):
        (tmp_path / f"{name}.jpg").write_bytes(samples[name])

    same = ops_json(data_dir, "similarity", "--identity", "test-user-1", "--probe", str(tmp_path / "probe_same_person.jpg"))
    assert same["verified"] is True and same["threshold"] == settings.verify_hi_threshold
    assert same["margin"] == pytest.approx(same["similarity"] - same["threshold"], abs=1e-3)
    assert [photo["image_index"] for photo in same["enrollment_photos"]] == [0, 1, 2]
    assert all(photo["similarity"] > settings.verify_hi_threshold for photo in same["enrollment_photos"])
    assert same["reason"].startswith("verifies")

    other = ops_json(data_dir, "similarity", "-i", "test-user-1", "--probe", str(tmp_path / "different_person.jpg"))
    assert other["verified"] is False and other["margin"] < 0
    assert "different people" in other["reason"]
    # The explanation decides exactly as /verify does: same template, same threshold.
    assert other["similarity"] < same["similarity"]

    code, output = ops(data_dir, "similarity", "-i", "test-user-1", "-t", "elsewhere",
                       "--probe", str(tmp_path / "probe_same_person.jpg"))
    assert code == 1 and "identity_not_enrolled" in output
