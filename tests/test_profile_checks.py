"""A wrong profile is refused once, clearly, and the service stays up saying why: several
FaceStore replicas on the embedded store, collections of another vector size, collections
another recognizer wrote. And the verification flow switches live (Gateway user_config)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml
from fastapi.testclient import TestClient
from pydantic import ValidationError
from ray.exceptions import RayTaskError
from ray.serve.schema import ServeDeploySchema

from serve_app.auth import KeyRing
from serve_app.config import Settings
from serve_app.deployments import store as store_deployment
from serve_app.deployments.gateway import Gateway
from serve_app.errors import Unavailable
from serve_app.flow_switch import with_verification_flow
from serve_app.flows.ports import Ports, ThreadedRepository
from serve_app.models.onnx_model import ModelFingerprint, fingerprint_of
from serve_app.models.pack import locate_pack
from serve_app.repository import FaceRepository, point_id
from serve_app.vectordb.base import Hit, Record
from serve_app.vectordb.edge import EdgeStore
from serve_app.vectordb.provenance import (
    MODEL_KEY,
    ProfileRefusal,
    check_replicas,
    open_repository,
    recognizer_fingerprint,
)
from serve_app.web.app import FeatureFlags, Services, create_app
from tests.fakes import DIM, FakeEmbedder, recorded_metrics

ROOT = Path(__file__).resolve().parent.parent
MODEL_A = ModelFingerprint("w600k_mbf.onnx", "a" * 64)
MODEL_B = ModelFingerprint("w600k_r50.onnx", "b" * 64)


def settings(tmp_path: Path, **extra: Any) -> Settings:
    return Settings(_env_file=None, **{"qdrant_path": tmp_path / "qdrant", "vector_dim": DIM, **extra})


# --- replicas on the embedded store ------------------------------------------------------

def test_embedded_store_allows_one_replica_and_a_server_many(tmp_path: Path) -> None:
    check_replicas(settings(tmp_path), 1)
    check_replicas(settings(tmp_path, qdrant_url="http://qdrant:6333"), 4)
    with pytest.raises(ProfileRefusal) as refused:
        check_replicas(settings(tmp_path), 2)
    assert refused.value.code == "embedded_store_single_replica" and "QDRANT_URL" in refused.value.message


@pytest.fixture
def store_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    monkeypatch.setenv("QDRANT_PATH", str(tmp_path / "qdrant"))
    for name in ("QDRANT_URL", "VECTOR_DIM", "FACE_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "qdrant"


def make_store(monkeypatch: pytest.MonkeyPatch, replicas: int) -> Any:
    """The FaceStore deployment's class, built as Serve builds a replica of `replicas`."""
    monkeypatch.setattr(store_deployment, "planned_replicas", lambda: replicas)
    return store_deployment.FaceStore.func_or_class()


def test_two_store_replicas_on_the_embedded_store_refuse_once_and_stay_up(
        store_env: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="ray.serve"):
        first, second = make_store(monkeypatch, 2), make_store(monkeypatch, 2)
    refusals = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(refusals) == 2  # one line per replica, no traceback
    assert all("embedded_store_single_replica" in r.getMessage() and r.exc_info is None for r in refusals)
    health = asyncio.run(first.health())
    assert health["status"] == "down" and health["error"] == "embedded_store_single_replica"
    with pytest.raises(Unavailable) as refused:
        asyncio.run(second.get_identity("t1", "alice"))
    assert refused.value.code == "embedded_store_single_replica" and refused.value.status_code == 503
    # Neither opened a shard: the store is free for a correct profile.
    single = make_store(monkeypatch, 1)
    try:
        assert asyncio.run(single.health())["status"] == "ok"
    finally:
        single.repository.store.close()


# --- which model wrote a collection -----------------------------------------------------

def test_collections_record_their_model_and_refuse_another(tmp_path: Path) -> None:
    profile = settings(tmp_path)
    repository = open_repository(profile, 1, MODEL_A)
    recorded = repository.store.collection_metadata(repository.faces)[MODEL_KEY]
    assert recorded == {"name": MODEL_A.name, "sha256": MODEL_A.sha256, "dim": DIM}
    repository.store.close()

    with pytest.raises(ProfileRefusal) as refused:
        open_repository(profile, 1, MODEL_B)
    assert refused.value.code == "model_mismatch"
    assert MODEL_A.name in refused.value.message and MODEL_B.name in refused.value.message
    # The refusal released the shards: the right model opens them again, data intact.
    again = open_repository(profile, 1, MODEL_A)
    again.store.close()


def test_collections_of_another_size_are_refused(tmp_path: Path) -> None:
    open_repository(settings(tmp_path), 1, MODEL_A).store.close()
    with pytest.raises(ProfileRefusal) as refused:
        open_repository(settings(tmp_path, vector_dim=DIM * 2), 1, MODEL_A)
    assert refused.value.code == "vector_dim_mismatch" and f"VECTOR_DIM={DIM * 2}" in refused.value.message


def test_collections_from_before_the_record_adopt_the_running_model(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    profile = settings(tmp_path)
    legacy = FaceRepository.for_settings(EdgeStore(profile.qdrant_path), profile)
    legacy.ensure_all()
    legacy.store.upsert(legacy.faces, [Record(point_id("t1", "f1"), {"tenant_id": "t1"},
                                              np.eye(DIM, dtype=np.float32)[0])])
    legacy.store.close()
    with caplog.at_level(logging.WARNING, logger="ray.serve"):
        repository = open_repository(profile, 1, MODEL_B)
    assert repository.store.collection_metadata(repository.faces)[MODEL_KEY]["sha256"] == MODEL_B.sha256
    assert any("records no model" in r.getMessage() for r in caplog.records)
    repository.store.close()


def test_the_running_recognizer_is_fingerprinted_by_its_file() -> None:
    model = recognizer_fingerprint(Settings(_env_file=None))
    path = locate_pack(None).recognizer
    assert model == fingerprint_of(path) and model.name == path.name and len(model.sha256) == 64


# --- the HTTP side: refusals keep their code; the live switch ------------------------------

class RefusingRepository(ThreadedRepository):
    """What the Gateway meets when the FaceStore deployment refuses: Ray's wrapped error."""

    async def search_faces(self, *args: Any, **kwargs: Any) -> list[Hit]:
        raise RayTaskError("search_faces", "", Unavailable("model_mismatch")).as_instanceof_cause()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, FeatureFlags, FaceRepository]]:
    profile = settings(tmp_path)
    repository = FaceRepository.for_settings(EdgeStore(profile.qdrant_path), profile)
    repository.ensure_all()
    flags = FeatureFlags(verification_flow=True)
    embedder, store = FakeEmbedder(), ThreadedRepository(repository)
    api = create_app(Services(ports=Ports(embedder, store, profile), keys=KeyRing(False, None, None),
                              metrics=recorded_metrics(), components={"embedder": embedder, "store": store},
                              flags=flags))
    with TestClient(api) as client:
        yield client, flags, repository
    repository.store.close()


def test_a_refusal_from_the_store_deployment_keeps_its_code(tmp_path: Path) -> None:
    profile = settings(tmp_path)
    repository = FaceRepository.for_settings(EdgeStore(profile.qdrant_path), profile)
    repository.ensure_all()
    store = RefusingRepository(repository)
    api = create_app(Services(ports=Ports(FakeEmbedder(), store, profile), keys=KeyRing(False, None, None),
                              metrics=recorded_metrics(), components={"store": store}))
    with TestClient(api) as client:
        response = client.post("/api/v1/search", json={"tenant_id": "t1", "image_b64": "YWxpY2U=", "top_k": 3})
    repository.store.close()
    assert (response.status_code, response.json()["detail"]) == (503, "model_mismatch")


def test_verification_flow_switch_turns_enroll_and_verify_off_and_on(
        app: tuple[TestClient, FeatureFlags, FaceRepository]) -> None:
    client, flags, _ = app
    alice = ["YWxpY2UvMQ==", "YWxpY2UvMg=="]  # b"alice/1", b"alice/2"
    assert client.post("/api/v1/enroll_identity", json={"tenant_id": "t1", "identity_id": "alice",
                                                         "images_b64": alice}).status_code == 200
    flags.verification_flow = False
    enroll = client.post("/api/v1/enroll_identity", json={"tenant_id": "t1", "identity_id": "bob",
                                                          "images_b64": alice})
    verify = client.post("/api/v1/verify", json={"tenant_id": "t1", "identity_id": "alice",
                                                 "image_b64": alice[0]})
    for refused in (enroll, verify):
        assert (refused.status_code, refused.json()["detail"]) == (503, "verification_flow_disabled")
    ingest = client.post("/api/v1/ingest", json={"tenant_id": "t1", "site": "s", "image_b64": "Y2Fyb2wvMQ=="})
    search = client.post("/api/v1/search", json={"tenant_id": "t1", "image_b64": alice[0], "top_k": 3})
    assert ingest.status_code == 200 and search.status_code == 200
    assert client.get("/api/v1/health").json()["verification_flow"] is False
    flags.verification_flow = True
    assert client.post("/api/v1/verify", json={"tenant_id": "t1", "identity_id": "alice",
                                               "image_b64": alice[0]}).json()["verified"] is True
    assert client.get("/api/v1/health").json()["verification_flow"] is True


def test_gateway_reconfigure_sets_the_switch_and_falls_back_to_the_environment() -> None:
    # The replica's state that reconfigure reads, without a Serve replica around it.
    gateway = SimpleNamespace(settings=Settings(_env_file=None, enable_verification_flow=True),
                              flags=FeatureFlags(verification_flow=True))
    reconfigure = Gateway.func_or_class.reconfigure
    reconfigure(gateway, {"enable_verification_flow": False})
    assert gateway.flags.verification_flow is False
    reconfigure(gateway, {})  # key removed from user_config: the environment's value again
    assert gateway.flags.verification_flow is True
    with pytest.raises(ValidationError):
        reconfigure(gateway, {"enable_verfication_flow": False})  # a typo fails loudly


def test_flow_switch_changes_only_the_gateways_user_config() -> None:
    production = yaml.safe_load((ROOT / "configs" / "production.yaml").read_text())
    switched = with_verification_flow(production, False)
    ServeDeploySchema.model_validate(switched)
    before = {d["name"]: d for d in production["applications"][0]["deployments"]}
    after = {d["name"]: d for d in switched["applications"][0]["deployments"]}
    assert after["Gateway"]["user_config"] == {"enable_verification_flow": False}
    assert {k: v for k, v in after["Gateway"].items() if k != "user_config"} == before["Gateway"]
    assert after["FaceEmbedder"] == before["FaceEmbedder"] and after["FaceStore"] == before["FaceStore"]
