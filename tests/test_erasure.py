"""Erasure and concurrent enrollment on the embedded engine (real Qdrant Edge)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serve_app.repository import ErasedIdentity, ErasedTenant, FaceRepository, GalleryFace, point_id
from serve_app.vectordb.base import Record
from serve_app.vectordb.edge import EdgeStore
from tests.helpers import faces_of, identities_of

DIM = 8


def unit(seed: int) -> np.ndarray:
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


@pytest.fixture
def repository(tmp_path):
    repo = FaceRepository(EdgeStore(tmp_path / "q"), "faces_v1", "identities_v1", DIM)
    repo.ensure_all()
    yield repo
    repo.store.close()


def enroll(repo: FaceRepository, tenant: str, identity: str, seeds: list[int]) -> None:
    faces = [GalleryFace(point_id("enrollment", tenant, identity, str(i)), unit(seed), {"seed": seed})
             for i, seed in enumerate(seeds)]
    template = np.mean([unit(seed) for seed in seeds], axis=0)
    repo.save_identity(tenant, identity, template, faces, {"seeds": seeds})


def ingest_face(repo: FaceRepository, tenant: str, face_id: str, vector, identity: str | None) -> None:
    payload = {"tenant_id": tenant, "source": "ingest", "image_id": face_id}
    if identity:
        # Tagged as ingestion tags: under the identity's current generation.
        payload.update(identity_id=identity, identity_score=0.9,
                       identity_gen=repo.get_identity(tenant, identity).generation)
    repo.store.upsert(repo.faces, [Record(point_id("face", tenant, face_id), payload, vector)])


def test_delete_identity_erases_template_enrollment_faces_and_tags(repository) -> None:
    enroll(repository, "t1", "alice", [1, 2, 3])
    enroll(repository, "t1", "bob", [4, 5])
    ingest_face(repository, "t1", "g1", unit(1), "alice")
    ingest_face(repository, "t1", "g2", unit(4), "bob")

    erased = repository.delete_identity("t1", "alice")
    assert erased == ErasedIdentity(enrollment_faces_deleted=3, gallery_faces_untagged=1)
    assert repository.get_identity("t1", "alice") is None
    assert repository.search_faces("t1", unit(1), 10, identity_id="alice") == []
    # The gallery face stays (it is a crawled photo), without the erased identity's tag.
    gallery = repository.store.retrieve(repository.faces, [point_id("face", "t1", "g1")])[0]
    assert "identity_id" not in gallery.payload and "identity_score" not in gallery.payload
    # Bob is untouched.
    assert repository.get_identity("t1", "bob") is not None
    assert len(repository.search_faces("t1", unit(4), 10, identity_id="bob")) == 3
    assert repository.delete_identity("t1", "alice") is None


def test_delete_identity_is_per_tenant(repository) -> None:
    enroll(repository, "t1", "alice", [1, 2])
    enroll(repository, "t2", "alice", [1, 2])
    repository.delete_identity("t1", "alice")
    assert repository.get_identity("t2", "alice") is not None
    assert faces_of(repository, "t2") == 2


def test_delete_tenant_leaves_other_tenants(repository) -> None:
    enroll(repository, "t1", "alice", [1, 2])
    ingest_face(repository, "t1", "g1", unit(9), None)
    enroll(repository, "t2", "carol", [3])
    assert repository.delete_tenant("t1") == ErasedTenant(identities_deleted=1, faces_deleted=3)
    assert faces_of(repository, "t1") == 0 and identities_of(repository, "t1") == 0
    assert faces_of(repository, "t2") == 1 and repository.get_identity("t2", "carol") is not None


def test_concurrent_enrollments_leave_one_consistent_identity(repository) -> None:
    # Two clients enroll the same identity at once with different photo sets, many times.
    sets = [[10, 11, 12], [20, 21, 22, 23]]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: enroll(repository, "t1", "same", sets[i % 2]), range(40)))
    identity = repository.get_identity("t1", "same")
    winner = identity.payload["seeds"]
    assert winner in sets
    faces = repository.store.scroll(repository.faces, {"tenant_id": "t1", "identity_id": "same"})
    assert sorted(record.payload["seed"] for record in faces) == sorted(winner)
    expected = np.mean([unit(seed) for seed in winner], axis=0)
    assert float(identity.template @ expected / np.linalg.norm(expected)) > 0.9999
