"""Legacy 1:N search over the tenant's gallery (kept for backward compatibility)."""

from __future__ import annotations

from serve_app.embedding import EmbedRequest
from serve_app.flows.ports import Ports
from serve_app.flows.quality_gate import gate_probe
from serve_app.flows.views import face_hit, face_info
from serve_app.schemas import SearchQuery, SearchResponse


async def search(ports: Ports, tenant_id: str, image: bytes, top_k: int) -> SearchResponse:
    face = (await ports.embedder.embed(EmbedRequest(image))).largest()
    gate_probe(face, ports.settings)
    hits = await ports.repository.search_faces(tenant_id, face.embedding, top_k)
    shown = [face_hit(hit) for hit in hits]
    return SearchResponse(query=SearchQuery(tenant_id=tenant_id, top_k=top_k, face=face_info(face)),
                          hits=shown, count=len(shown))
