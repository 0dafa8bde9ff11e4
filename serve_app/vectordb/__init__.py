"""Vector storage: one small interface (`VectorStore`), two Qdrant engines."""

from serve_app.vectordb.base import CollectionSpec, Filter, Hit, Record, VectorStore

__all__ = ["CollectionSpec", "Filter", "Hit", "Record", "VectorStore", "open_store"]


def open_store(settings) -> VectorStore:  # type: ignore[no-untyped-def]
    """Qdrant server when QDRANT_URL is set, else the embedded Qdrant Edge engine."""
    if not settings.embedded_store:
        from serve_app.vectordb.server import QdrantServerStore

        return QdrantServerStore.connect(settings.qdrant_url, settings.qdrant_api_key,
                                         settings.qdrant_timeout_s)
    from serve_app.vectordb.base import IndexSettings
    from serve_app.vectordb.edge import EdgeStore

    # Every opener (service, bulk ingestion, face-ops) loads the shards with the settings
    # their index is (re)built with.
    index = IndexSettings(hnsw_m=settings.edge_hnsw_m, hnsw_ef_construct=settings.edge_hnsw_ef_construct,
                          int8=settings.edge_int8)
    return EdgeStore(settings.qdrant_path, index)
