"""How faces are shown to clients: one place, so every endpoint agrees."""

from __future__ import annotations

from serve_app.embedding import Face
from serve_app.schemas import FaceHit, FaceInfo, QualityInfo
from serve_app.similarity import similarity_from_cosine
from serve_app.vectordb.base import Hit

_SHOWN_PAYLOAD = ("identity_id", "site", "url", "source", "box", "det_score", "p_hash", "image_id",
                  "ingested_at")


def face_info(face: Face) -> FaceInfo:
    """Box, detector score and the quality measures of a probe or enrollment photo."""
    info = FaceInfo.model_validate(face.describe())
    info.quality = QualityInfo.model_validate(face.quality.rounded())
    return info


def face_hit(hit: Hit) -> FaceHit:
    shown = {key: hit.payload[key] for key in _SHOWN_PAYLOAD if key in hit.payload}
    shown.setdefault("identity_id", None)
    return FaceHit(face_id=hit.id, similarity=round(similarity_from_cosine(hit.score), 4), **shown)
