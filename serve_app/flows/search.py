"""Legacy 1:N search over the tenant's gallery (kept for backward compatibility)."""

from __future__ import annotations

from typing import Any

from serve_app.embedding import EmbedRequest
from serve_app.flows.ports import Ports
from serve_app.flows.views import face_hit


async def search(ports: Ports, tenant_id: str, image: bytes, top_k: int) -> dict[str, Any]:
    face = (await ports.embedder.embed(EmbedRequest(image))).largest()
    hits = await ports.repository.search_faces(tenant_id, face.embedding, top_k)
    shown = [face_hit(hit) for hit in hits]
    return {
        "query": {"tenant_id": tenant_id, "top_k": top_k, "face": face.describe()},
        "hits": shown,
        "count": len(shown),
    }
