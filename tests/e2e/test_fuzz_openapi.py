"""Property-based fuzzing of every operation in the OpenAPI schema (Schemathesis):
whatever it generates, valid or not, must never get a 5xx.

Schemathesis runs as its own process, like a client would: its pytest integration and
the test runner's versions need not agree, and the run is bounded by --max-examples.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from loadtests.launcher import ServeProcess


def test_no_generated_request_gets_a_server_error(serve_app: ServeProcess) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    done = subprocess.run(
        [str(cli), "run", f"{serve_app.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "30", "--seed", "20261129", "--request-timeout", "60", "--no-color",
         "--phases", "examples,coverage,fuzzing", "--suppress-health-check", "all"],
        capture_output=True, text=True, timeout=900,
    )
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    # It did exercise the API: every POST/DELETE operation appears in the report.
    for path in ("/api/v1/enroll_identity", "/api/v1/verify", "/api/v1/search", "/api/v1/ingest"):
        assert path in done.stdout, report
