"""CPU time by process role, read from /proc (psutil) over a measured window.

The benchmark snapshots every process of a server (the process tree under the PIDs it
started: `ray start` and `serve run` for the graph, the uvicorn process for a peer) at
the start and the end of a step, and divides the CPU each role used by the requests
answered in between: CPU milliseconds per verification, by role. Ray names its worker
processes after what they run (`ray::ServeReplica:face-pipeline:Gateway`,
`ray::ProxyActor`, `ray::ServeController`), and its system processes are binaries or
scripts with telling names (gcs_server, raylet, dashboard agent, log monitor).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psutil

# (substring of the process title or command line, role), first match wins.
RAY_ROLES: tuple[tuple[str, str], ...] = (
    (":Gateway", "gateway"),
    (":FaceEmbedder", "embedder"),
    (":FaceStore", "store"),
    ("ProxyActor", "proxy"),
    ("ServeController", "controller"),
    ("gcs_server", "gcs"),
    ("raylet", "raylet"),
    ("DashboardAgent", "agents"),
    ("dashboard/agent.py", "agents"),
    ("runtime_env/agent", "agents"),
    ("log_monitor", "agents"),
    ("monitor.py", "agents"),
    ("ray::IDLE", "idle_workers"),
    ("serve run", "serve_cli"),
    ("bin/serve", "serve_cli"),
    ("ray start", "ray_cli"),
    ("bin/ray", "ray_cli"),
)
# Roles summed as "Ray system" in the report.
RAY_SYSTEM = frozenset({"controller", "gcs", "raylet", "agents", "idle_workers", "serve_cli", "ray_cli", "other"})


def role_of(title: str, roles: tuple[tuple[str, str], ...] = RAY_ROLES) -> str:
    for needle, role in roles:
        if needle in title:
            return role
    return "other"


def _title(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()) or process.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return ""


@dataclass(frozen=True)
class Snapshot:
    cpu_s: dict[int, float]  # pid -> user + system seconds so far
    roles: dict[int, str]


class CpuMeter:
    """CPU seconds per role of the process trees under `roots`.

    `fixed_role` names every process (a one-process peer); otherwise roles come from
    the process titles."""

    def __init__(self, roots: Iterable[int], fixed_role: str | None = None) -> None:
        self.roots = list(roots)
        self.fixed_role = fixed_role

    def _processes(self) -> list[psutil.Process]:
        found: dict[int, psutil.Process] = {}
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                for process in [root, *root.children(recursive=True)]:
                    found[process.pid] = process
            except psutil.NoSuchProcess:
                continue
        return list(found.values())

    def snapshot(self) -> Snapshot:
        cpu: dict[int, float] = {}
        roles: dict[int, str] = {}
        for process in self._processes():
            try:
                times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            cpu[process.pid] = times.user + times.system
            roles[process.pid] = self.fixed_role or role_of(_title(process))
        return Snapshot(cpu, roles)


def per_request_ms(before: Snapshot, after: Snapshot, requests: int) -> dict[str, float]:
    """CPU milliseconds per request by role between two snapshots (a process that started
    in between counts from zero; one that ended in between is lost, as /proc forgets it)."""
    if requests <= 0:
        return {}
    totals: dict[str, float] = {}
    for pid, seconds in after.cpu_s.items():
        used = seconds - before.cpu_s.get(pid, 0.0)
        role = after.roles[pid]
        totals[role] = totals.get(role, 0.0) + max(used, 0.0)
    figures = {role: 1000.0 * seconds / requests for role, seconds in sorted(totals.items())}
    figures["total"] = sum(figures.values())
    system = [value for role, value in figures.items() if role in RAY_SYSTEM]
    if system:
        figures["ray_system"] = sum(system)
    return figures
