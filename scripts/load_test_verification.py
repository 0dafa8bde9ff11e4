"""Deployment plan, Phase 4.3: concurrent verifications.

    python scripts/load_test_verification.py --concurrent 50 --iterations 500 [--host URL]

`--concurrent` clients verify back to back (same person, different person, unknown
identity: 3:1:1) until `--iterations` verifications are done; verification P95 < 300 ms
and errors < 1% are enforced (exit code 1 and the missed target printed otherwise).
Without `--host` the app is started on a fresh embedded store, as `make loadtest` does.
Reports: results/loadtest/verification/. Other options go to Locust.
"""

import sys
from pathlib import Path

# Run as a file from anywhere: the repository root holds the `loadtests` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.run import preset_main

if __name__ == "__main__":
    preset_main("VerificationUser", concurrent=50, iterations=500, label="verification")
