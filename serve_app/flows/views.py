"""How stored faces are shown to clients: one place, so every endpoint agrees."""

from __future__ import annotations

from typing import Any

from serve_app.similarity import similarity_from_cosine
from serve_app.store.base import Hit

_SHOWN_PAYLOAD = ("identity_id", "site", "url", "source", "box", "det_score", "p_hash", "image_id",
                  "ingested_at")


def face_hit(hit: Hit) -> dict[str, Any]:
    view: dict[str, Any] = {"face_id": hit.id, "similarity": round(similarity_from_cosine(hit.score), 4)}
    for key in _SHOWN_PAYLOAD:
        if key in hit.payload:
            view[key] = hit.payload[key]
    view.setdefault("identity_id", None)
    return view
