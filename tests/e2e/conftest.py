"""One real Serve app (serve_config.yaml, real models, embedded Qdrant Edge) per session."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from loadtests.launcher import ServeProcess


@pytest.fixture(scope="session")
def serve_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    # Metrics reach the agent every second instead of every ten: the tests that read them
    # (test_prometheus.py) wait less.
    app = ServeProcess(tmp_path_factory.mktemp("serve"), env={"RAY_metrics_report_interval_ms": "1000"})
    seconds = app.start()
    print(f"\nServe app healthy after {seconds:.1f}s on {app.url} (log: {app.log_path})")
    yield app
    app.stop()


@pytest.fixture(scope="session")
def client(serve_app: ServeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=serve_app.url, timeout=60) as http:
        yield http
