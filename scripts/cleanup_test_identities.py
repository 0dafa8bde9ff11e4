"""Deployment plan (Data Rollback, remove test identities): `face-ops cleanup --tenant test-tenant [--apply]`.

    python scripts/cleanup_test_identities.py ...   # the same options as `face-ops cleanup --help`
"""

import sys
from pathlib import Path

# Run as a file from anywhere: the repository root holds the `serve_app` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve_app.ops.cli import run_as

if __name__ == "__main__":
    run_as('cleanup')
