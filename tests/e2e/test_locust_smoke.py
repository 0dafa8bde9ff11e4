"""The Locust scenarios run for a few seconds against the test app, so they cannot rot.

Locust runs as a subprocess (`import locust` would monkey-patch this process with
gevent). No test here asserts a latency: the first runs with the targets off, the
second makes a target impossible on purpose and checks that the run says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtests.targets import ENROLL, INGEST, SEARCH, VERIFY
from loadtests.launcher import REPO_ROOT, ServeProcess

pytestmark = pytest.mark.e2e

LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"


def run_locust(url: str, out: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    summary_path = out / "summary.json"
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
               "--host", url, "--summary-json", str(summary_path), "--seed-identities", "1", *args]
    # A hang must fail the test rather than stall the suite; this bounds the run, it
    # measures nothing.
    result = subprocess.run(command, check=False, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return result, summary


def endpoints(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in summary.get("endpoints", [])}


def test_every_scenario_runs_without_failures(serve_app: ServeProcess, tmp_path: Path) -> None:
    result, summary = run_locust(
        serve_app.url, tmp_path, "--users", "8", "--spawn-rate", "8", "--run-time", "12s", "--no-targets",
        "--think-min-s", "0.1", "--think-max-s", "0.3", "--seed-gallery", "2", "--crawl-pool", "4",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    rows = endpoints(summary)
    assert set(rows) == {ENROLL, VERIFY, SEARCH, INGEST}, output[-4000:]
    for name, row in rows.items():
        assert row["requests"] > 0, name
        assert row["failures"] == 0, (name, output[-4000:])
    assert summary["targets"]["enforced"] is False


def test_impossible_target_fails_the_run_and_names_it(serve_app: ServeProcess, tmp_path: Path) -> None:
    result, summary = run_locust(
        serve_app.url, tmp_path, "--users", "2", "--spawn-rate", "2", "--run-time", "120s",
        "--iterations", "6", "--think-min-s", "0", "--think-max-s", "0", "--seed-gallery", "0",
        "--p95-verify-ms", "1", "VerificationUser",
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    assert "target MISSED: POST /api/v1/verify p95 < 1 ms" in output
    assert "--p95-verify-ms" in output
    rows = endpoints(summary)
    # --iterations stops the run after exactly that many requests.
    assert set(rows) == {VERIFY} and rows[VERIFY]["requests"] == 6
    assert rows[VERIFY]["failures"] == 0, output[-4000:]
    assert summary["passed"] is False
