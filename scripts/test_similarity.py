"""Deployment plan (Troubleshooting, verification always fails): `face-ops similarity --identity test-user-1 --probe probe.jpg`.

    python scripts/test_similarity.py ...   # the same options as `face-ops similarity --help`
"""

import sys
from pathlib import Path

# Run as a file from anywhere: the repository root holds the `serve_app` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve_app.ops.cli import run_as

if __name__ == "__main__":
    run_as('similarity')
