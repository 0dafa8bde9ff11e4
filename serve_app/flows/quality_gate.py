"""The quality gate: enrollment refuses a photo whose face is outside the QUALITY_* limits;
verify and search only when QUALITY_GATE_PROBES is set (they always report the measures)."""

from __future__ import annotations

from collections.abc import Sequence

from serve_app.config import Settings
from serve_app.embedding import Face
from serve_app.errors import DomainError
from serve_app.quality import QualityLimits, failures


def refuse_low_quality(faces: Sequence[Face], settings: Settings, name_index: bool = True) -> None:
    """422 `low_quality_image` naming the first photo that fails (its index and each
    failed measure with value and limit) and the indexes of all that fail."""
    limits = QualityLimits.from_settings(settings)
    refused = [(index, failed) for index, face in enumerate(faces) if (failed := failures(face.quality, limits))]
    if not refused:
        return
    index, failed = refused[0]
    where = {"image_index": index, "image_indexes": [i for i, _ in refused]} if name_index else {}
    raise DomainError("low_quality_image", 422, **where, failed=[failure.describe() for failure in failed])


def gate_enrollment(faces: Sequence[Face], settings: Settings) -> None:
    if settings.quality_gate_enrollment:
        refuse_low_quality(faces, settings)


def gate_probe(face: Face, settings: Settings) -> None:
    if settings.quality_gate_probes:
        refuse_low_quality([face], settings, name_index=False)
