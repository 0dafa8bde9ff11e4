"""Start the Serve graph as a child process (`serve run`), wait for health, stop it.

Used by the end-to-end tests, `make loadtest` and `make bench`: each needs the real app
on its own port and store, started exactly as an operator starts it, from a YAML file.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
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
from dotenv import dotenv_values

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "serve_config.yaml"
# Ray Serve process settings, the same file `make` includes.
RAY_ENV_FILE = REPO_ROOT / "configs" / "ray.env"


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


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ServeProcess:
    """The app on a private Ray instance (own ports, own temp dir), a port and a data dir.

    Ray is started as `ray start --head --block` (a child that stops its processes when
    it is stopped), then `serve run --address` deploys the YAML onto it, as an operator
    does on a cluster. The Ray address is known, so tests can reach the replicas (to
    kill one) and the metrics port (to scrape it).
    """

    def __init__(
        self,
        data_dir: Path,
        config: Path = DEFAULT_CONFIG,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.config = Path(config)
        self.port = free_port()
        self.env = env or {}
        self.log_path = log_path or self.data_dir / "serve.log"
        self.ray_port = 0
        self.metrics_port = 0
        self._ray: subprocess.Popen[bytes] | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._ray_temp: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        """The processes this started (`ray start`, `serve run`); Ray's own hang below them."""
        return [process.pid for process in (self._ray, self.process) if process is not None]

    @property
    def ray_address(self) -> str:
        return f"127.0.0.1:{self.ray_port}"

    def _write_config(self) -> Path:
        config = yaml.safe_load(self.config.read_text())
        config.setdefault("http_options", {})["port"] = self.port
        handle, path = tempfile.mkstemp(prefix="serve-", suffix=".yaml", dir=self.data_dir)
        with os.fdopen(handle, "w") as out:
            yaml.safe_dump(config, out)
        return Path(path)

    def _env(self) -> dict[str, str]:
        tuning = {key: value for key, value in dotenv_values(RAY_ENV_FILE).items() if value is not None}
        env = {
            **tuning,
            **os.environ,
            "QDRANT_PATH": str(self.data_dir / "qdrant"),
            "RAY_USAGE_STATS_ENABLED": "0",
            **self.env,
        }
        env.pop("RAY_ADDRESS", None)
        return env

    def start(self, timeout_s: float = 300.0) -> float:
        """Start and wait until /api/v1/health answers 200; returns the seconds it took."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        bin_dir = Path(sys.executable).parent
        # Ray clusters authenticate their clients by token: one fresh token per instance,
        # handed to both `ray start` and `serve run` (and to tests that attach to it).
        self.env.setdefault("RAY_AUTH_MODE", "token")
        self.env.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        env = self._env()
        started = time.monotonic()
        deadline = started + timeout_s
        self.ray_port, self.metrics_port = free_port(), free_port()
        # Short, private temp dir: Ray's unix sockets live there (path length limit), and
        # its address file there keeps other drivers on this machine from joining.
        self._ray_temp = tempfile.mkdtemp(prefix="fp-ray-", dir="/tmp")
        with open(self.log_path, "ab") as log:
            self._ray = subprocess.Popen(
                [str(bin_dir / "ray"), "start", "--head", "--block", f"--port={self.ray_port}",
                 "--node-ip-address=127.0.0.1",
                 "--include-dashboard=false", f"--metrics-export-port={self.metrics_port}",
                 "--disable-usage-stats", f"--temp-dir={self._ray_temp}"],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
            while not _port_open(self.ray_port):
                self._check_alive(self._ray, "ray start", deadline)
            self.process = subprocess.Popen(
                [str(bin_dir / "serve"), "run", "--address", self.ray_address, str(self._write_config())],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        while True:
            self._check_alive(self.process, "serve run", deadline)
            try:
                status, _ = get_json(f"{self.url}/api/v1/health", timeout=2)
                if status == 200:
                    return time.monotonic() - started
            except (OSError, ValueError):
                pass

    def _check_alive(self, process: subprocess.Popen[bytes], what: str, deadline: float) -> None:
        if process.poll() is not None:
            self.stop()
            raise RuntimeError(f"{what} exited with {process.returncode}; see {self.log_path}")
        if time.monotonic() > deadline:
            self.stop()
            raise TimeoutError(f"the app was not healthy in time; see {self.log_path}")
        time.sleep(0.5)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ctrl-C `serve run` (Serve shuts the app down gracefully), then stop Ray."""
        for process, signum in ((self.process, signal.SIGINT), (self._ray, signal.SIGTERM)):
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signum)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    pass
            # Whatever is left in its process group (raylet, workers) goes too.
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if process.poll() is None:
                process.wait(timeout=10)
        self.process = self._ray = None
        if self._ray_temp:
            shutil.rmtree(self._ray_temp, ignore_errors=True)
            self._ray_temp = None
