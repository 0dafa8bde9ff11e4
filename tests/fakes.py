"""Fakes for tests of the logic around the models: a deterministic embedder.

The fake turns image bytes like b"alice/2" into a unit vector close to alice's own
direction, so similarities are known exactly and the tests can aim at the thresholds.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from serve_app.embedding import EmbedRequest, EmbedResult, Face
from serve_app.errors import NoFaceDetected
from serve_app.metrics import ServiceMetrics
from serve_app.quality import QualityMeasures

DIM = 16


def direction(name: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
    vector = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return vector / np.linalg.norm(vector)


def blend(name: str, other: str, weight: float) -> np.ndarray:
    vector = (1 - weight) * direction(name) + weight * direction(other)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


# A well-lit, sharp, frontal face, comfortably inside the default quality limits.
GOOD_QUALITY = QualityMeasures(face_size=100.0, det_score=0.9, sharpness=250.0, brightness=140.0, clipped=0.0,
                               yaw=2.0, pitch=-3.0)
# Photo variants with a known quality fault: b"alice/blurred" is alice, out of focus.
FAULTS = {
    "blurred": {"sharpness": 8.0},
    "turned": {"yaw": -48.0},
    "dark": {"brightness": 30.0, "sharpness": 20.0},
}


class FakeEmbedder:
    """b"alice/3" -> alice's direction nudged by a per-photo variation; b"noface" -> 422;
    a variant named in FAULTS (b"alice/blurred") carries that quality fault."""

    def __init__(self) -> None:
        self.calls = 0
        self.overrides: dict[bytes, np.ndarray] = {}

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        self.calls += 1
        if request.data == b"noface":
            return EmbedResult(error=NoFaceDetected())
        if request.data in self.overrides:
            vector = self.overrides[request.data]
        else:
            name, _, variant = request.data.decode().partition("/")
            vector = blend(name, f"noise-{variant}", 0.15) if variant else direction(name)
        variant = request.data.partition(b"/")[2].decode(errors="replace")
        quality = replace(GOOD_QUALITY, **FAULTS.get(variant, {}))
        p_hash = hashlib.sha256(request.data).hexdigest()[:16] if request.with_phash else None
        return EmbedResult(faces=[Face((10.0, 10.0, 90.0, 110.0), 0.9, vector, quality)], width=100, height=120,
                           p_hash=p_hash)

    async def health(self) -> dict[str, object]:
        return {"status": "ok", "provider": "fake"}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object, object]] = []

    def inc(self, value: float = 1.0, tags: dict | None = None) -> None:
        self.calls.append(("inc", value, tags))

    def observe(self, value: float, tags: dict | None = None) -> None:
        self.calls.append(("observe", value, tags))

    def set(self, value: float, tags: dict | None = None) -> None:
        self.calls.append(("set", value, tags))


def recorded_metrics() -> ServiceMetrics:
    """The service's metrics with every metric object replaced by a `Recorder`."""
    service = ServiceMetrics()
    for name, value in list(vars(service).items()):
        if hasattr(value, "inc") or hasattr(value, "observe") or hasattr(value, "set"):
            setattr(service, name, Recorder())
    return service
