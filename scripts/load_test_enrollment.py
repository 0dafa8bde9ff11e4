"""Deployment plan, Phase 4.3: concurrent enrollments.

    python scripts/load_test_enrollment.py --concurrent 10 --iterations 100 [--host URL]

`--concurrent` clients enroll new identities (three photos each) back to back until
`--iterations` enrollments are done; enrollment P95 < 500 ms and errors < 1% are
enforced (exit code 1 and the missed target printed otherwise). Without `--host` the app
is started on a fresh embedded store, as `make loadtest` does. Reports:
results/loadtest/enrollment/. Other options go to Locust (loadtests/locustfile.py).
"""

import sys
from pathlib import Path

# Run as a file from anywhere: the repository root holds the `loadtests` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.run import preset_main

if __name__ == "__main__":
    preset_main("EnrollmentUser", concurrent=10, iterations=100, label="enrollment")
