"""Checks that stop a wrong profile before it serves: an embedded store that more than one
FaceStore replica would open, collections of another vector size, and collections whose
vectors another recognizer model wrote (mixing two models' embeddings makes every
similarity meaningless). Each collection records the model that writes it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, NoReturn

from serve_app.config import Settings
from serve_app.errors import Unavailable
from serve_app.models.onnx_model import ModelFingerprint, fingerprint_of
from serve_app.models.pack import locate_pack
from serve_app.repository import FaceRepository
from serve_app.vectordb import open_store
# MODEL_KEY: the key of the model record in each collection's metadata.
from serve_app.vectordb.base import MODEL_KEY, VectorStore

logger = logging.getLogger("ray.serve")

MIGRATION_HINT = "README 'Changing the recognizer model'"


def recognizer_fingerprint(settings: Settings) -> ModelFingerprint:
    """The recognizer this profile's embedders load (located, not loaded)."""
    pack = locate_pack(settings.face_model_dir, settings.face_detector_file, settings.face_recognizer_file)
    return fingerprint_of(pack.recognizer)


class ProfileRefusal(Exception):
    """A configuration this service must not run with; `code` is the stable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def check_replicas(settings: Settings, planned_replicas: int) -> None:
    if settings.embedded_store and planned_replicas > 1:
        raise ProfileRefusal(
            "embedded_store_single_replica",
            f"FaceStore is deployed with up to {planned_replicas} replicas on the embedded store "
            f"({settings.qdrant_path}), which one process at a time may open: set QDRANT_URL to a "
            "Qdrant server, or deploy FaceStore with num_replicas: 1",
        )


def check_model(store: VectorStore, collections: Sequence[str], model: ModelFingerprint, dim: int) -> None:
    """Refuse collections another model wrote; record this model on those without a record."""
    for collection in collections:
        recorded = store.collection_metadata(collection).get(MODEL_KEY)
        if recorded is None:
            points = store.describe(collection).points
            if points:
                # Written before collections recorded their model: adopt, loudly.
                logger.warning("collection %s (%d points) records no model; recording %s (sha256 %s)",
                               collection, points, model.name, model.sha256[:12])
            store.update_collection_metadata(collection, {MODEL_KEY: {**asdict(model), "dim": dim}})
        elif recorded.get("sha256") != model.sha256:
            raise ProfileRefusal(
                "model_mismatch",
                f"collection {collection} holds vectors of {recorded.get('name')} "
                f"(sha256 {str(recorded.get('sha256'))[:12]}), but this service embeds with {model.name} "
                f"(sha256 {model.sha256[:12]}); serve it with that model, or migrate: {MIGRATION_HINT}",
            )


def open_repository(settings: Settings, planned_replicas: int, model: ModelFingerprint,
                    wrap: Callable[[VectorStore], VectorStore] = lambda store: store) -> FaceRepository:
    """The configured collections, created where missing and checked; raises ProfileRefusal.
    `wrap` decorates the engine (the FaceStore deployment times every call with it)."""
    check_replicas(settings, planned_replicas)
    store = wrap(open_store(settings))
    repository = FaceRepository.for_settings(store, settings)
    try:
        try:
            repository.ensure_all()
        except ValueError as error:  # both engines: an existing collection of another size
            raise ProfileRefusal("vector_dim_mismatch", f"{error} (VECTOR_DIM={settings.vector_dim}); "
                                 f"migrate: {MIGRATION_HINT}") from None
        check_model(store, [repository.faces, repository.identities], model, settings.vector_dim)
    except ProfileRefusal:
        store.close()
        raise
    return repository


class RefusedStore(VectorStore):
    """Stands in for the store of a refused profile: every operation answers 503 with the
    refusal's code, so the service stays up, says why, and does not crash-loop."""

    engine = "refused"

    def __init__(self, refusal: ProfileRefusal) -> None:
        self.refusal = refusal

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise Unavailable(self.refusal.code)

    ensure_collection = describe = exists = snapshot = restore = upsert = retrieve = search = scroll = count = _refuse
    set_payload = delete_payload_keys = delete = delete_where = _refuse
    collection_metadata = update_collection_metadata = _refuse
