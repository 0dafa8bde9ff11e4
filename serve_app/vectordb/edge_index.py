"""Child process of `EdgeStore.rebuild_index`: open a copy of a shard, build its index
(HNSW and quantized vectors, per the store's `IndexSettings`), flush and close it.

Its own process because Edge holds the GIL while it optimizes.

    python -m serve_app.vectordb.edge_index SHARD_DIR DIM INDEX_SETTINGS_JSON
"""

from __future__ import annotations

import json
import os
import sys

import qdrant_edge as qe

from serve_app.vectordb.base import IndexSettings
from serve_app.vectordb.edge import edge_config


def main(argv: list[str]) -> None:
    path, dim, settings = argv
    # Background work: the service's answers come first on a busy machine.
    os.nice(10)
    loaded = json.loads(settings)
    index = IndexSettings(**loaded) if loaded else None
    shard = qe.EdgeShard.load(path, edge_config(int(dim), index))
    shard.optimize()
    shard.flush()
    shard.close()


if __name__ == "__main__":
    main(sys.argv[1:])
