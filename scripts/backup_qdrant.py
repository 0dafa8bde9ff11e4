"""Deployment plan (Phase 1.1, back up the collections): `face-ops backup --collection faces_v1`.

    python scripts/backup_qdrant.py ...   # the same options as `face-ops backup --help`
"""

import sys
from pathlib import Path

# Run as a file from anywhere: the repository root holds the `serve_app` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve_app.ops.cli import run_as

if __name__ == "__main__":
    run_as('backup')
