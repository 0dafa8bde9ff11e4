"""Which model wrote a collection's vectors.

Embeddings of two recognizers are not comparable, so a collection remembers the model
that wrote it (collection metadata) and a backup carries it (manifest): a restore into a
service running another model, or another vector size, is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from serve_app.config import Settings
from serve_app.errors import DomainError
from serve_app.models.onnx_model import ModelFingerprint
from serve_app.repository import FaceRepository
from serve_app.vectordb.provenance import ProfileRefusal, check_model, recognizer_fingerprint


@dataclass(frozen=True)
class ModelIdentity:
    """As each collection records it (serve_app.vectordb.provenance, MODEL_KEY)."""

    name: str
    sha256: str
    dim: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any) -> ModelIdentity | None:
        if not isinstance(value, dict) or not {"name", "sha256", "dim"} <= value.keys():
            return None
        return cls(str(value["name"]), str(value["sha256"]), int(value["dim"]))

    def __str__(self) -> str:
        return f"{self.name} (sha256 {self.sha256[:12]}, {self.dim}-d)"


def model_identity(settings: Settings) -> ModelIdentity:
    """The configured recognizer: its file name, content hash and vector size (the
    detector only finds and aligns faces; it does not decide the embedding space)."""
    fingerprint = recognizer_fingerprint(settings)
    return ModelIdentity(fingerprint.name, fingerprint.sha256, settings.vector_dim)


def ensure_collections(repository: FaceRepository, model: ModelIdentity) -> None:
    """Create the missing collections and payload indexes (idempotent) and record `model`
    on collections that record none; a collection another model wrote is refused (409)."""
    repository.ensure_all()
    try:
        check_model(repository.store, [repository.faces, repository.identities],
                    ModelFingerprint(model.name, model.sha256), model.dim)
    except ProfileRefusal as refusal:
        raise DomainError(refusal.code, 409, reason=refusal.message) from None
