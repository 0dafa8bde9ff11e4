"""Start the Serve graph as a child process (`serve run`), wait for health, stop it.

Used by the end-to-end tests, `make loadtest` and `make bench`: each needs the real app
on its own port and store, started exactly as an operator starts it, from a YAML file.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "serve_config.yaml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


class ServeProcess:
    """One `serve run` child on a private Ray instance, port and data directory."""

    def __init__(
        self,
        data_dir: Path,
        config: Path = DEFAULT_CONFIG,
        port: int | None = None,
        env: dict[str, str] | None = None,
        deployment_overrides: dict[str, dict[str, Any]] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = Path(config)
        self.port = port or free_port()
        self.env = env or {}
        self.overrides = deployment_overrides or {}
        self.log_path = log_path or self.data_dir / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        config = yaml.safe_load(self.config.read_text())
        config.setdefault("http_options", {})["port"] = self.port
        for app in config["applications"]:
            for deployment in app.get("deployments", []):
                deployment.update(self.overrides.get(deployment["name"], {}))
        handle, path = tempfile.mkstemp(prefix="serve-", suffix=".yaml", dir=self.data_dir)
        with os.fdopen(handle, "w") as out:
            yaml.safe_dump(config, out)
        return Path(path)

    def start(self, timeout_s: float = 300.0) -> float:
        """Start and wait until /api/v1/health answers 200; returns the seconds it took."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "QDRANT_PATH": str(self.data_dir / "qdrant"),
            "RAY_USAGE_STATS_ENABLED": "0",
            # A private Ray instance: never join a cluster a developer already runs.
            "RAY_ADDRESS": "local",
            **self.env,
        }
        serve_bin = Path(sys.executable).with_name("serve")
        log = open(self.log_path, "ab")
        started = time.monotonic()
        self.process = subprocess.Popen(
            [str(serve_bin), "run", str(self._write_config())],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve run exited with {self.process.returncode}; see {self.log_path}")
            try:
                status, _ = get_json(f"{self.url}/api/v1/health", timeout=2)
                if status == 200:
                    return time.monotonic() - started
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"the app was not healthy within {timeout_s}s; see {self.log_path}")

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ctrl-C, as an operator would: Serve shuts the app down, then its Ray instance."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # Whatever Ray left behind in the process group (raylet, workers) goes too.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=10)

    def __enter__(self) -> "ServeProcess":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
