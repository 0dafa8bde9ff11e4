"""Start the Serve graph as a child process (`serve run`), wait for health, stop it.

Used by the end-to-end tests, `make loadtest` and `make bench`: each needs the real app
on its own port and store, started exactly as an operator starts it, from a YAML file.
The multi-node test adds Ray nodes to the same private cluster and deploys with
`serve deploy`, as on a real cluster.
"""

from __future__ import annotations

import json
import os
import random
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "serve_config.yaml"
# Ray Serve process settings, the same file `make` includes.
RAY_ENV_FILE = REPO_ROOT / "configs" / "ray.env"


# Ports for the servers this starts: below the kernel's ephemeral range (32768+), where
# the many connections Ray opens while it starts could take a port between the moment it
# is chosen here and the moment a server binds it, and above Ray's worker ports (10002-19999).
_PORTS = range(20000, 30000)


def free_port() -> int:
    """A port nothing listens on now, drawn at random from `_PORTS`."""
    for port in random.sample(_PORTS, 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {_PORTS}")


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


@dataclass
class RayNode:
    """One `ray start --block` child: killing its process group takes the node down."""

    process: subprocess.Popen[bytes]
    resources: dict[str, float] = field(default_factory=dict)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait(timeout=30)


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
        self.dashboard_port = 0
        self.nodes: list[RayNode] = []
        self._deployed = False
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

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _write_config(self, source: Path | None = None) -> Path:
        config = yaml.safe_load((source or self.config).read_text())
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
        started = time.monotonic()
        deadline = started + timeout_s
        self.start_ray(deadline)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self._bin("serve"), "run", "--address", self.ray_address, str(self._write_config())],
                cwd=REPO_ROOT, env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.wait_healthy(deadline, self.process)
        return time.monotonic() - started

    @staticmethod
    def _bin(name: str) -> str:
        return str(Path(sys.executable).parent / name)

    def _node_ports(self) -> list[str]:
        # Every node on this machine needs its own agent ports (their defaults are fixed).
        return [f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
                f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]

    def start_ray(self, deadline: float, dashboard: bool = False) -> None:
        """The head node; `dashboard` serves Serve's REST API (`serve deploy`, `serve status`)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Ray clusters authenticate their clients by token: one fresh token per instance,
        # handed to `ray start`, `serve run`/`serve deploy` (and to tests that attach to it).
        self.env.setdefault("RAY_AUTH_MODE", "token")
        self.env.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        self.ray_port = free_port()
        ports = self._node_ports()
        self.metrics_port = int(ports[0].split("=")[1])
        if dashboard:
            self.dashboard_port = free_port()
            ports += ["--include-dashboard=true", f"--dashboard-port={self.dashboard_port}",
                      "--dashboard-host=127.0.0.1", f"--ray-client-server-port={free_port()}"]
        else:
            ports.append("--include-dashboard=false")
        # Short, private temp dir: Ray's unix sockets live there (path length limit), and
        # its address file there keeps other drivers on this machine from joining.
        self._ray_temp = tempfile.mkdtemp(prefix="fp-ray-", dir="/tmp")
        self._ray = self._ray_start(["--head", f"--port={self.ray_port}", *ports])
        while not _port_open(self.ray_port):
            self._check_alive(self._ray, "ray start", deadline)
        if dashboard:
            while not _port_open(self.dashboard_port):
                self._check_alive(self._ray, "ray start (dashboard)", deadline)

    def _ray_start(self, args: list[str]) -> subprocess.Popen[bytes]:
        with open(self.log_path, "ab") as log:
            return subprocess.Popen(
                [self._bin("ray"), "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                 f"--temp-dir={self._ray_temp}", *args],
                cwd=REPO_ROOT, env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def add_node(self, num_cpus: float, resources: dict[str, float], timeout_s: float = 180.0,
                 attempts: int = 3) -> RayNode:
        """Another Ray node of this cluster, on this machine, with its own custom resources;
        returns once the cluster lists it alive."""
        deadline = time.monotonic() + timeout_s
        before: set[str] = set()
        while not before:  # the state API answers once the head's dashboard is up
            before = {n["node_id"] for n in self.alive_nodes()}
            self._check_alive(self._ray, "ray start (head)", deadline)
        for attempt in range(1, attempts + 1):
            node = RayNode(self._ray_start([f"--address={self.ray_address}", f"--num-cpus={num_cpus}",
                                            f"--resources={json.dumps(resources)}", *self._node_ports()]),
                           resources)
            self.nodes.append(node)
            while not {n["node_id"] for n in self.alive_nodes()} - before:
                time.sleep(1)  # each poll costs the head some CPU the new raylet needs
                if node.process.poll() is not None and attempt < attempts:
                    # `ray start` gives a raylet 30 s to register (fixed in Ray); on a
                    # loaded machine that can pass. Try again, a few times.
                    node.kill()
                    self.nodes.remove(node)
                    break
                self._check_alive(node.process, "ray start (worker node)", deadline)
            else:
                return node
        raise AssertionError("unreachable: the last attempt returns or raises")

    def alive_nodes(self) -> list[dict[str, Any]]:
        """Alive nodes as Ray's state API lists them (needs the dashboard); empty while it
        cannot answer."""
        try:
            answer = self._dashboard_get("/api/v0/nodes?limit=1000")
        except (OSError, ValueError):
            return []
        nodes = answer.get("data", {}).get("result", {}).get("result", [])
        return [node for node in nodes if node.get("state") == "ALIVE"]

    def deploy(self, config: Path) -> None:
        """`serve deploy` a YAML (this app's port) through the head's dashboard, as on a cluster."""
        self._serve_cli("deploy", str(self._write_config(config)))
        self._deployed = True

    def serve_status(self) -> dict[str, Any]:
        """`serve status`, parsed."""
        return dict(yaml.safe_load(self._serve_cli("status")))

    def serve_details(self) -> dict[str, Any]:
        """Serve's REST view of the cluster (what `serve status` reads), replicas' nodes included."""
        return self._dashboard_get("/api/serve/applications/")

    def _dashboard_get(self, path: str) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.dashboard_url}{path}",
                                         headers={"Authorization": f"Bearer {self.env['RAY_AUTH_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return dict(json.loads(response.read()))

    def _serve_cli(self, *args: str) -> str:
        done = subprocess.run([self._bin("serve"), *args, "--address", self.dashboard_url],
                              cwd=REPO_ROOT, env=self._env(), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"serve {args[0]} failed: {done.stderr[-2000:]}")
        return done.stdout

    def wait_healthy(self, deadline: float, process: subprocess.Popen[bytes] | None = None) -> None:
        while True:
            self._check_alive(process or self._ray, "serve run" if process else "ray start", deadline)
            try:
                status, _ = get_json(f"{self.url}/api/v1/health", timeout=2)
                if status == 200:
                    return
            except (OSError, ValueError):
                pass

    def _check_alive(self, process: subprocess.Popen[bytes] | None, what: str, deadline: float) -> None:
        if process is None or process.poll() is not None:
            self.stop()
            code = process.returncode if process else None
            raise RuntimeError(f"{what} exited with {code}; see {self.log_path}")
        if time.monotonic() > deadline:
            self.stop()
            raise TimeoutError(f"the app was not healthy in time; see {self.log_path}")
        time.sleep(0.5)

    def stop(self, timeout_s: float = 60.0) -> None:
        """Ctrl-C `serve run` (Serve shuts the app down gracefully), then stop Ray."""
        if self._deployed and self._ray is not None and self._ray.poll() is None:
            # Deployed with `serve deploy`: shut the app down gracefully (the store flushes).
            try:
                self._serve_cli("shutdown", "--yes")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            self._deployed = False
        for node in self.nodes:
            node.kill()
        self.nodes = []
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
