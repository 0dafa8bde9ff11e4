"""The flows' logic, with a fake embedder (tests/fakes.py) and a real (in-memory) Qdrant engine."""

from __future__ import annotations

import numpy as np
import pytest
from qdrant_client import QdrantClient

from serve_app.config import Settings
from serve_app.errors import DomainError, NoFaceDetected, NotFound
from serve_app.flows import enroll as enroll_flow
from serve_app.flows import search as search_flow
from serve_app.flows import verify as verify_flow
from serve_app.flows.ports import Ports, ThreadedRepository
from serve_app.repository import FaceRepository
from serve_app.schemas import EnrollResponse, IdentityRef
from serve_app.similarity import similarity_from_cosine
from serve_app.vectordb.server import QdrantServerStore
from tests.fakes import DIM, FakeEmbedder, blend, direction
from tests.helpers import faces_of, run


@pytest.fixture
def settings() -> Settings:
    return Settings(_env_file=None, vector_dim=DIM)


@pytest.fixture
def repository(settings: Settings) -> FaceRepository:
    repo = FaceRepository.for_settings(QdrantServerStore(QdrantClient(":memory:")), settings)
    repo.ensure_all()
    return repo


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def ports(embedder: FakeEmbedder, repository: FaceRepository, settings: Settings) -> Ports:
    return Ports(embedder, ThreadedRepository(repository), settings)


def enroll(ports: Ports, tenant: str, identity: str, photos: list[bytes]) -> EnrollResponse:
    return run(enroll_flow.enroll_identity(ports, tenant, identity, photos))


ALICE = [b"alice/1", b"alice/2", b"alice/3"]


def test_enrollment_stores_the_normalised_mean_template(ports, repository, embedder) -> None:
    answer = enroll(ports, "t1", "alice", ALICE)
    assert answer.ok is True
    assert answer.identity == IdentityRef(tenant_id="t1", identity_id="alice")
    assert answer.vector_dim == DIM and answer.images_used == 3
    stored = repository.get_identity("t1", "alice")
    vectors = np.stack([blend("alice", f"noise-{i}", 0.15) for i in (1, 2, 3)])
    expected = vectors.mean(axis=0)
    expected /= np.linalg.norm(expected)
    np.testing.assert_allclose(stored.template, expected, atol=1e-5)
    assert embedder.calls == 3


def test_enrollment_refuses_photos_of_two_people(ports, repository) -> None:
    with pytest.raises(DomainError) as refused:
        enroll(ports, "t1", "alice", [b"alice/1", b"bob/1", b"alice/2"])
    assert refused.value.code == "enrollment_faces_disagree"
    assert refused.value.status_code == 422
    assert set(refused.value.extra["image_indexes"]) & {1}
    assert repository.get_identity("t1", "alice") is None  # nothing half-written


def test_enrollment_names_the_photo_without_a_face(ports) -> None:
    with pytest.raises(DomainError) as refused:
        enroll(ports, "t1", "alice", [b"alice/1", b"noface"])
    assert refused.value.code == "no_face_detected"
    assert refused.value.extra["image_index"] == 1


def test_reenrollment_replaces_template_and_enrollment_faces(ports, repository) -> None:
    enroll(ports, "t1", "alice", ALICE)
    enroll(ports, "t1", "alice", [b"carol/1", b"carol/2"])
    stored = repository.get_identity("t1", "alice")
    assert stored.payload["images"] == 2
    assert float(stored.template @ direction("carol")) > 0.9
    assert faces_of(repository, "t1") == 2


def test_verify_same_person_passes_and_returns_identity_faces(ports) -> None:
    enroll(ports, "t1", "alice", ALICE)
    enroll(ports, "t1", "bob", [b"bob/1", b"bob/2"])
    answer = run(verify_flow.verify(ports, "t1", "alice", b"alice/9"))
    assert answer.verified is True
    assert answer.similarity >= 0.78
    assert answer.count == len(answer.results) == 3
    assert {hit.identity_id for hit in answer.results} == {"alice"}
    similarities = [hit.similarity for hit in answer.results]
    assert similarities == sorted(similarities, reverse=True)


def test_verify_different_person_fails_with_no_results(ports) -> None:
    enroll(ports, "t1", "alice", ALICE)
    answer = run(verify_flow.verify(ports, "t1", "alice", b"bob/1"))
    assert answer.verified is False
    assert answer.results == [] and answer.count == 0
    assert answer.similarity < 0.78


def test_verify_threshold_is_applied_on_the_similarity_scale(ports, embedder) -> None:
    enroll(ports, "t1", "alice", [b"alice"])
    template = direction("alice")
    # Build a probe whose cosine to the template is exactly 0.60 -> similarity 0.80.
    orthogonal = direction("other") - float(direction("other") @ template) * template
    orthogonal /= np.linalg.norm(orthogonal)
    embedder.overrides[b"probe"] = (0.6 * template + 0.8 * orthogonal).astype(np.float32)
    passed = run(verify_flow.verify(ports, "t1", "alice", b"probe"))
    assert passed.similarity == pytest.approx(0.80, abs=1e-3) and passed.verified is True
    raised = run(verify_flow.verify(ports, "t1", "alice", b"probe", hi_threshold=0.85))
    assert raised.verified is False and raised.threshold == 0.85


def test_request_cannot_lower_threshold_below_floor(ports, settings) -> None:
    enroll(ports, "t1", "alice", ALICE)
    with pytest.raises(DomainError) as refused:
        run(verify_flow.verify(ports, "t1", "alice", b"bob/1", hi_threshold=settings.verify_threshold_floor - 0.1))
    assert refused.value.code == "threshold_below_floor"


def test_verify_unknown_identity_is_404(ports) -> None:
    with pytest.raises(NotFound) as missing:
        run(verify_flow.verify(ports, "t1", "nobody", b"alice/1"))
    assert missing.value.code == "identity_not_enrolled" and missing.value.status_code == 404


def test_tenants_never_see_each_other(ports) -> None:
    enroll(ports, "tenant-a", "alice", ALICE)
    with pytest.raises(NotFound):
        run(verify_flow.verify(ports, "tenant-b", "alice", b"alice/9"))
    assert run(search_flow.search(ports, "tenant-b", b"alice/9", 10)).count == 0
    assert run(search_flow.search(ports, "tenant-a", b"alice/9", 10)).count == 3


def test_search_ranks_gallery_and_honours_top_k(ports) -> None:
    enroll(ports, "t1", "alice", ALICE)
    enroll(ports, "t1", "bob", [b"bob/1", b"bob/2"])
    answer = run(search_flow.search(ports, "t1", b"bob/5", 4))
    assert answer.count == 4 == len(answer.hits)
    assert [hit.identity_id for hit in answer.hits[:2]] == ["bob", "bob"]
    assert answer.query.top_k == 4


def test_similarity_scale_maps_cosine_to_unit_interval() -> None:
    assert similarity_from_cosine(1.0) == 1.0
    assert similarity_from_cosine(-1.0) == 0.0
    assert similarity_from_cosine(0.56) == pytest.approx(0.78)


def test_domain_errors_survive_pickling_across_processes() -> None:
    import pickle

    for error in (NoFaceDetected(image_index=2), NotFound("identity_not_enrolled", identity_id="x"),
                  DomainError("face_too_small", 422, min_face_size=20)):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert (copy.code, copy.status_code, copy.extra) == (error.code, error.status_code, error.extra)


def test_enrollment_refuses_a_low_quality_photo_naming_each_failed_measure(ports, repository) -> None:
    with pytest.raises(DomainError) as refused:
        enroll(ports, "t1", "alice", [b"alice/1", b"alice/dark", b"alice/2", b"alice/blurred"])
    error = refused.value
    assert (error.code, error.status_code) == ("low_quality_image", 422)
    assert error.extra["image_index"] == 1 and error.extra["image_indexes"] == [1, 3]
    assert error.extra["failed"] == [
        {"measure": "sharpness", "value": 20.0, "limit": 30.0, "bound": "min"},
        {"measure": "brightness", "value": 30.0, "limit": 50.0, "bound": "min"},
    ]
    assert repository.get_identity("t1", "alice") is None  # no template from a refused photo


def test_enrollment_answer_shows_each_photos_measures(ports) -> None:
    answer = enroll(ports, "t1", "alice", ALICE)
    assert [face.quality.sharpness for face in answer.faces if face.quality] == [250.0] * 3


def test_enrollment_gate_can_be_turned_off(ports, settings, repository) -> None:
    lenient = Ports(ports.embedder, ports.repository, settings.model_copy(update={"quality_gate_enrollment": False}))
    enroll(lenient, "t1", "alice", [b"alice/1", b"alice/turned"])
    assert repository.get_identity("t1", "alice") is not None


def test_probes_report_quality_and_are_refused_only_when_configured(ports, settings) -> None:
    enroll(ports, "t1", "alice", ALICE)
    verified = run(verify_flow.verify(ports, "t1", "alice", b"alice/turned"))
    assert verified.verified is True and verified.probe_face.quality is not None
    assert verified.probe_face.quality.yaw == -48.0
    searched = run(search_flow.search(ports, "t1", b"alice/blurred", 5))
    assert searched.query.face.quality is not None and searched.query.face.quality.sharpness == 8.0
    strict = Ports(ports.embedder, ports.repository, settings.model_copy(update={"quality_gate_probes": True}))
    for attempt in (verify_flow.verify(strict, "t1", "alice", b"alice/turned"),
                    search_flow.search(strict, "t1", b"alice/turned", 5)):
        with pytest.raises(DomainError) as refused:
            run(attempt)
        assert refused.value.code == "low_quality_image" and "image_index" not in refused.value.extra
        assert refused.value.extra["failed"] == [{"measure": "yaw", "value": 48.0, "limit": 30.0, "bound": "max"}]
