"""Deployment plan (Troubleshooting, memory leak): `face-ops leaks`.

    python scripts/check_resource_leaks.py ...   # the same options as `face-ops leaks --help`
"""

import sys
from pathlib import Path

# Run as a file from anywhere: the repository root holds the `serve_app` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve_app.ops.cli import run_as

if __name__ == "__main__":
    run_as('leaks')
