"""`face-ops leaks`: memory, file descriptors and threads of each replica process before
and after N requests, with a verdict (the plan's `check_resource_leaks.py`)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlparse

import psutil
import typer
from rich.table import Table

from serve_app.ops.context import OpsError, console, reports_errors, state
from serve_app.ops.load import Workload, run_requests

MB = 1024 * 1024
# Replicas reach a steady state after their first requests (allocator arenas, ORT
# buffers per input shape); growth below these is noise, not a leak.
RSS_SLACK_MB = 32.0
RSS_SLACK_FRACTION = 0.05
# A leak grows every round; a replica that meets a new batch shape late grows once.
ROUND_SLACK_MB = 8.0
FD_SLACK = 8
THREAD_SLACK = 4


@dataclass(frozen=True)
class Usage:
    rss_mb: float
    fds: int
    threads: int


def serve_processes(url: str) -> dict[int, str]:
    """The Serve processes behind `url` on this host: the HTTP proxy listening on its port
    and its siblings (replicas, controller), all children of the same raylet."""
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 80
    local = {"localhost", "0.0.0.0", "::1", socket.gethostname()}
    if host not in local and not host.startswith("127.") and host not in _local_addresses():
        raise OpsError(f"leaks reads the service's processes: run it on the service's host (not {host})")
    listening = {c.pid for c in psutil.net_connections("tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid}
    if not listening:
        raise OpsError(f"no process of this user listens on port {port}")
    proxy = psutil.Process(listening.pop())
    raylet = proxy.parent()
    if raylet is None:
        raise OpsError(f"the process on port {port} ({proxy.name()}) has no parent to search")
    found: dict[int, str] = {}
    for child in raylet.children():
        try:
            title = " ".join(child.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if title.startswith("ray::Serve") or title.startswith("ray::Proxy"):
            # ray::ServeReplica:<app>:<deployment>, ray::ProxyActor, ray::ServeController
            found[child.pid] = title.removeprefix("ray::").split(" ")[0].split(":")[-1].split(".")[0]
    if not found:
        raise OpsError(f"no Ray Serve processes beside the one on port {port} ({proxy.name()})")
    return found


def _local_addresses() -> set[str]:
    return {address.address for addresses in psutil.net_if_addrs().values() for address in addresses}


def usage(pids: dict[int, str]) -> dict[int, Usage]:
    measured = {}
    for pid in pids:
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                measured[pid] = Usage(round(process.memory_info().rss / MB, 1), process.num_fds(),
                                      process.num_threads())
        except psutil.NoSuchProcess:
            continue
    return measured


def verdict(rounds: list[Usage]) -> str:
    """'ok' or what grew: rounds[0] is after the warm-up, the rest after each batch."""
    first, last = rounds[0], rounds[-1]
    problems = []
    growth = last.rss_mb - first.rss_mb
    steps = [b.rss_mb - a.rss_mb for a, b in zip(rounds, rounds[1:], strict=False)]
    if growth > max(RSS_SLACK_MB, RSS_SLACK_FRACTION * first.rss_mb) and all(step > ROUND_SLACK_MB for step in steps):
        problems.append(f"memory grew {growth:+.1f} MB in every round")
    if last.fds - first.fds > FD_SLACK:
        problems.append(f"{last.fds - first.fds:+d} open files")
    if last.threads - first.threads > THREAD_SLACK:
        problems.append(f"{last.threads - first.threads:+d} threads")
    return "; ".join(problems) or "ok"


def render(data: dict[str, Any]) -> None:
    table = Table(title=f"{data['requests_per_round']} x {data['rounds']} requests to {data['endpoint']}")
    for column in ("pid", "process", "RSS MB", "fds", "threads", "verdict"):
        table.add_column(column)
    for entry in data["processes"]:
        rss = " -> ".join(f"{u['rss_mb']:.0f}" for u in entry["rounds"])
        fds = f"{entry['rounds'][0]['fds']} -> {entry['rounds'][-1]['fds']}"
        threads = f"{entry['rounds'][0]['threads']} -> {entry['rounds'][-1]['threads']}"
        colour = "green" if entry["verdict"] == "ok" else "red"
        table.add_row(str(entry["pid"]), entry["name"], rss, fds, threads, f"[{colour}]{entry['verdict']}[/{colour}]")
    console.print(table)
    colour = "green" if data["leak_suspected"] is False else "red"
    console.print(f"[{colour}]{data['summary']}[/{colour}]")


@reports_errors
def leaks(
    ctx: typer.Context,
    requests: Annotated[int, typer.Option("--requests", "-n", min=1, help="Requests per round")] = 150,
    rounds: Annotated[int, typer.Option("--rounds", "-r", min=1, help="Rounds after the warm-up")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", min=0)] = 50,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1)] = 4,
    endpoint: Annotated[str, typer.Option("--endpoint", "-e")] = "/api/v1/verify",
    tenant: Annotated[str, typer.Option("--tenant", "-t")] = "ops-profile",
) -> None:
    """RSS, open file descriptors and threads of every Serve process (replicas, proxy,
    controller) after a warm-up and after each round of requests; growth in every round
    beyond the slack is reported as a suspected leak (exit code 1)."""
    ops = state(ctx)
    if not ops.live:
        raise OpsError(f"no service answers at {ops.url}; leaks needs a running service (--url)")
    pids = serve_processes(ops.url)
    workload = Workload(endpoint, tenant)
    history: dict[int, list[Usage]] = {pid: [] for pid in pids}

    def record() -> None:
        for pid, measured in usage(pids).items():
            history[pid].append(measured)

    with ops.http() as client:
        workload.setup(client)
        try:
            run_requests(client, workload, warmup, concurrency, "warm-up")
            record()
            for number in range(rounds):
                run_requests(client, workload, requests, concurrency, f"round {number + 1}/{rounds}")
                record()
        finally:
            workload.teardown(client)
    processes = []
    for pid, measured in history.items():
        complete = len(measured) == rounds + 1
        processes.append({"pid": pid, "name": pids[pid], "rounds": [u.__dict__ for u in measured],
                          "verdict": verdict(measured) if complete else "exited or restarted during the run"})
    suspected = [p for p in processes if p["verdict"] != "ok"]
    summary = (f"leak suspected in {len(suspected)} of {len(processes)} processes" if suspected
               else f"no leak: {len(processes)} processes steady over {rounds} rounds")
    data = {"endpoint": endpoint, "requests_per_round": requests, "rounds": rounds, "processes": processes,
            "leak_suspected": bool(suspected), "summary": summary}
    ops.emit(data, render)
    if suspected:
        raise typer.Exit(1)
