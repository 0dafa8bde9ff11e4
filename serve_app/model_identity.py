"""Which model wrote a collection's vectors.

Embeddings of two recognizers are not comparable, so a collection remembers the model
that wrote it (collection metadata) and a backup carries it (manifest): a restore into a
service running another model, or another vector size, is refused.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from serve_app.config import Settings
from serve_app.models.onnx_model import ModelFingerprint, fingerprint_of
from serve_app.models.pack import locate_pack


@dataclass(frozen=True)
class ModelIdentity:
    recognizer: str
    sha256: str
    dim: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any) -> ModelIdentity | None:
        if not isinstance(value, dict) or not {"recognizer", "sha256", "dim"} <= value.keys():
            return None
        return cls(str(value["recognizer"]), str(value["sha256"]), int(value["dim"]))

    def __str__(self) -> str:
        return f"{self.recognizer} (sha256 {self.sha256[:12]}, {self.dim}-d)"


@lru_cache(maxsize=8)
def _fingerprint(path: Path) -> ModelFingerprint:
    return fingerprint_of(path)


def model_identity(settings: Settings) -> ModelIdentity:
    """The configured recognizer: its file name, content hash and vector size (the
    detector only finds and aligns faces; it does not decide the embedding space)."""
    pack = locate_pack(settings.face_model_dir, settings.face_detector_file, settings.face_recognizer_file)
    fingerprint = _fingerprint(pack.recognizer.resolve())
    return ModelIdentity(fingerprint.name, fingerprint.sha256, settings.vector_dim)
