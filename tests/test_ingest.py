"""Gallery ingestion with the real models and the real embedded engine (no Ray).

players.jpg (many faces) is the gallery; probes are crops of single players.
"""

from __future__ import annotations


import cv2
import numpy as np
import pytest

from serve_app.config import Settings
from serve_app.dedup import hamming, hash_bands
from serve_app.embedding import FacePipeline
from serve_app.flows import enroll as enroll_flow
from serve_app.flows import ingest as ingest_flow
from serve_app.flows import verify as verify_flow
from serve_app.flows.ports import PipelineEmbedder, Ports, ThreadedRepository
from serve_app.repository import FaceRepository
from serve_app.samples import adjust, crop_box, encode_jpeg, read_package_image, resize
from serve_app.schemas import EnrollResponse, IngestResponse, IngestStatus
from serve_app.vectordb.edge import EdgeStore
from tests.helpers import faces_of, run


@pytest.fixture
def repository(tmp_path, settings: Settings):
    repo = FaceRepository.for_settings(EdgeStore(tmp_path / "qdrant"), settings)
    repo.ensure_all()
    yield repo
    repo.store.close()


@pytest.fixture
def ports(pipeline: FacePipeline, repository: FaceRepository, settings: Settings) -> Ports:
    return Ports(PipelineEmbedder(pipeline), ThreadedRepository(repository), settings)


@pytest.fixture(scope="module")
def players() -> np.ndarray:
    return read_package_image("players.jpg")


@pytest.fixture(scope="module")
def players_jpeg(players: np.ndarray) -> bytes:
    return encode_jpeg(players, 95)


def ingest(ports: Ports, data: bytes, tenant: str = "t1", site: str = "example.org", **extra) -> IngestResponse:
    return run(ingest_flow.ingest_image(ports, tenant, site, data, **extra))


def test_every_detected_face_is_stored_with_its_payload(ports, repository, pipeline, players_jpeg) -> None:
    from serve_app.embedding import EmbedRequest, FaceSelection

    direct = pipeline.run([EmbedRequest(players_jpeg, FaceSelection.ALL)])[0]
    answer = ingest(ports, players_jpeg, url="https://example.org/team.jpg", metadata={"album": "team"})
    assert answer.status == IngestStatus.INGESTED
    assert answer.count == len(direct.faces) == len(answer.face_ids) >= 15
    assert faces_of(repository, "t1") == answer.count
    stored = repository.store.retrieve(repository.faces, answer.face_ids[:1])[0].payload
    assert stored["tenant_id"] == "t1" and stored["site"] == "example.org"
    assert stored["url"] == "https://example.org/team.jpg" and stored["metadata"] == {"album": "team"}
    assert stored["p_hash"] == answer.p_hash and stored["p_hash_prefix"] == hash_bands(answer.p_hash)
    assert set(stored["box"]) == {"x1", "y1", "x2", "y2"} and 0 < stored["det_score"] <= 1
    assert stored["image_id"] == answer.image_id and stored["ingested_at"] > 0


def test_retry_of_same_bytes_creates_nothing_twice(ports, repository, players_jpeg) -> None:
    first = ingest(ports, players_jpeg)
    again = ingest(ports, players_jpeg)
    assert again.status == IngestStatus.ALREADY_INGESTED
    assert again.face_ids == sorted(first.face_ids)
    assert faces_of(repository, "t1") == first.count


def test_recompressed_resized_copy_is_a_duplicate(ports, repository, players, players_jpeg) -> None:
    first = ingest(ports, players_jpeg, url="https://a.example/orig.jpg")
    copy = encode_jpeg(adjust(resize(players, 0.6), brightness=10), quality=55)
    answer = ingest(ports, copy, url="https://b.example/copy.jpg")
    assert answer.status == IngestStatus.DUPLICATE
    assert answer.duplicate_of.image_id == first.image_id
    assert answer.duplicate_of.url == "https://a.example/orig.jpg"
    assert answer.duplicate_of.distance <= ports.settings.dedup_max_distance
    assert faces_of(repository, "t1") == first.count


def test_a_different_photo_is_not_a_duplicate(ports, players_jpeg) -> None:
    ingest(ports, players_jpeg)
    other = encode_jpeg(read_package_image("gdp.jpg"))
    assert ingest(ports, other).status == IngestStatus.INGESTED


def test_duplicates_are_per_tenant(ports, players_jpeg) -> None:
    ingest(ports, players_jpeg, tenant="t1")
    assert ingest(ports, players_jpeg, tenant="t2").status == IngestStatus.INGESTED


def test_flipped_image_is_not_a_duplicate_but_a_close_crop_hash_differs(players) -> None:
    from serve_app.dedup import perceptual_hash

    original = perceptual_hash(players)
    assert hamming(original, perceptual_hash(resize(players, 0.5))) <= 4
    assert hamming(original, perceptual_hash(cv2.flip(players, 1))) > 10


def enroll_player(ports: Ports, players: np.ndarray, face_box, identity: str, tenant: str = "t1") -> EnrollResponse:
    crop = crop_box(players, face_box, margin=0.8)
    photos = [encode_jpeg(crop), encode_jpeg(cv2.flip(crop, 1)), encode_jpeg(adjust(crop, brightness=20))]
    return run(enroll_flow.enroll_identity(ports, tenant, identity, photos))


def test_ingested_faces_are_tagged_and_returned_by_verify(ports, players, players_jpeg) -> None:
    gallery = ingest(ports, players_jpeg)
    target = gallery.faces[3]
    box = tuple(getattr(target.box, k) for k in ("x1", "y1", "x2", "y2"))
    enroll_player(ports, players, box, "player-4")

    probe = encode_jpeg(adjust(resize(crop_box(players, box, margin=1.0), 1.4), brightness=-15), quality=80)
    answer = run(verify_flow.verify(ports, "t1", "player-4", probe))
    assert answer.verified is True
    gallery_hits = [hit for hit in answer.results if getattr(hit, "source", None) == "ingest"]
    assert [hit.face_id for hit in gallery_hits] == [target.face_id]
    # Another tenant's copy of the gallery is never part of the results.
    other = ingest(ports, players_jpeg, tenant="t2")
    answer = run(verify_flow.verify(ports, "t1", "player-4", probe))
    assert not set(hit.face_id for hit in answer.results) & set(other.face_ids)


def test_enrolling_after_ingestion_back_tags(ports, repository, players, players_jpeg) -> None:
    gallery = ingest(ports, players_jpeg)
    assert all(face.identity_id is None for face in gallery.faces)
    target = gallery.faces[0]
    box = tuple(getattr(target.box, k) for k in ("x1", "y1", "x2", "y2"))
    enrolled = enroll_player(ports, players, box, "player-1")
    assert enrolled.gallery_faces_tagged == 1
    tagged = repository.store.scroll(repository.faces, {"tenant_id": "t1", "identity_id": "player-1",
                                                        "source": "ingest"})
    assert [record.id for record in tagged] == [target.face_id]


def test_reenrolling_as_someone_else_untags(ports, repository, players, players_jpeg) -> None:
    gallery = ingest(ports, players_jpeg)
    first = tuple(getattr(gallery.faces[0].box, k) for k in ("x1", "y1", "x2", "y2"))
    second = tuple(getattr(gallery.faces[5].box, k) for k in ("x1", "y1", "x2", "y2"))
    enroll_player(ports, players, first, "player-x")
    again = enroll_player(ports, players, second, "player-x")
    assert again.gallery_faces_untagged == 1 and again.gallery_faces_tagged == 1
    tagged = repository.store.scroll(repository.faces, {"tenant_id": "t1", "identity_id": "player-x",
                                                        "source": "ingest"})
    assert [record.id for record in tagged] == [gallery.faces[5].face_id]


def test_ingestion_tags_faces_of_enrolled_identities(ports, players, players_jpeg) -> None:
    from serve_app.embedding import EmbedRequest, FaceSelection

    faces = ports.embedder._pipeline.run([EmbedRequest(players_jpeg, FaceSelection.ALL)])[0].faces
    box = faces[2].box
    enroll_player(ports, players, box, "player-3")
    answer = ingest(ports, players_jpeg)
    tagged = [face for face in answer.faces if face.identity_id == "player-3"]
    assert len(tagged) == 1 and tagged[0].similarity >= 0.78
    assert tagged[0].box.x1 == pytest.approx(box[0], abs=1.0)
    assert sum(face.identity_id is not None for face in answer.faces) == 1


def test_image_without_faces_is_reported_not_stored(ports, repository) -> None:
    blank = encode_jpeg(np.full((100, 100, 3), 128, np.uint8))
    answer = ingest(ports, blank)
    assert answer.status == IngestStatus.NO_FACES and answer.count == 0
    assert faces_of(repository, "t1") == 0


def test_ingest_answer_counts_faces_over_the_per_image_cap(repository, pipeline, settings, players_jpeg) -> None:
    from serve_app.embedding import EmbedRequest, FaceSelection

    everyone = len(pipeline.run([EmbedRequest(players_jpeg, FaceSelection.ALL)])[0].faces)
    capped = FacePipeline(pipeline.detector, pipeline.recognizer, pipeline.min_face_size,
                          pipeline.limits.max_pixels, max_faces_per_image=4)
    ports = Ports(PipelineEmbedder(capped), ThreadedRepository(repository), settings)
    answer = ingest(ports, players_jpeg)
    assert answer.count == 4 and faces_of(repository, "t1") == 4
    assert answer.excess_faces_dropped == everyone - 4 > 0
