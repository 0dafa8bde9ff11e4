"""`face-ops profile`: latency percentiles of one endpoint and, when the service sends
`Server-Timing`, where the time goes (the plan's `profile_endpoint.py`, "High Latency")."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from serve_app.ops.context import OpsError, console, reports_errors, state
from serve_app.ops.load import Sample, Workload, run_requests

PERCENTILES = (50, 90, 95, 99)


def summarize(samples: list[Sample], wall_s: float) -> dict[str, Any]:
    ok = [s for s in samples if s.status == 200]
    latencies = np.array([s.seconds * 1000 for s in ok]) if ok else np.zeros(1)
    summary: dict[str, Any] = {
        "requests": len(samples),
        "ok": len(ok),
        "errors": dict(Counter(str(s.status) for s in samples if s.status != 200)),
        "throughput_rps": round(len(samples) / wall_s, 2) if wall_s else 0.0,
        "latency_ms": {f"p{p}": round(float(np.percentile(latencies, p)), 1) for p in PERCENTILES}
        | {"mean": round(float(latencies.mean()), 1), "max": round(float(latencies.max()), 1)},
    }
    timed = [s.stages for s in ok if s.stages]
    stages: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(name for stage in timed for name in stage):
        values = np.array([stage[name] for stage in timed if name in stage])
        stages[name] = {"mean": round(float(values.mean()), 2), "p50": round(float(np.percentile(values, 50)), 2),
                        "p95": round(float(np.percentile(values, 95)), 2), "seen": len(values)}
    summary["server_timing"] = stages
    return summary


def render(data: dict[str, Any]) -> None:
    latency = data["latency_ms"]
    table = Table(title=f"{data['endpoint']}: {data['requests']} requests, {data['concurrency']} at a time")
    for column in ("ok", "errors", "req/s", *(f"{name} ms" for name in latency)):
        table.add_column(column, justify="right")
    errors = ", ".join(f"{code}: {n}" for code, n in data["errors"].items()) or "0"
    table.add_row(str(data["ok"]), errors, str(data["throughput_rps"]), *(str(v) for v in latency.values()))
    console.print(table)
    if not data["server_timing"]:
        console.print("[dim]no Server-Timing header in the answers: no per-stage breakdown[/dim]")
        return
    stages = Table(title="Server-Timing (ms, per request)")
    for column in ("stage", "mean", "p50", "p95", "share of mean latency"):
        stages.add_column(column, justify="right" if column != "stage" else "left")
    for name, values in data["server_timing"].items():
        share = 100 * values["mean"] / latency["mean"] if latency["mean"] else 0.0
        stages.add_row(name, str(values["mean"]), str(values["p50"]), str(values["p95"]), f"{share:.0f}%")
    console.print(stages)


@reports_errors
def profile(
    ctx: typer.Context,
    endpoint: Annotated[str, typer.Option("--endpoint", "-e")] = "/api/v1/verify",
    requests: Annotated[int, typer.Option(
        "--requests", "-n", min=1, help="How many requests (after the warm-up)")] = 100,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Requests in flight at once")] = 1,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed requests first")] = 5,
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant of the profile identity")] = "ops-profile",
    photo: Annotated[Path | None, typer.Option(
        "--photo", exists=True, dir_okay=False, help="Probe photo (default: the sample probe)")] = None,
) -> None:
    """N requests with a sample photo against the running service: latency percentiles and
    the per-stage Server-Timing breakdown. Verify enrolls (and afterwards erases) a profile
    identity in --tenant."""
    ops = state(ctx)
    if not ops.live:
        raise OpsError(f"no service answers at {ops.url}; profile needs a running service (--url)")
    workload = Workload(endpoint, tenant, photo.read_bytes() if photo else None)
    with ops.http() as client:
        workload.setup(client)
        try:
            if warmup:
                run_requests(client, workload, warmup, concurrency, "warm-up")
            started = time.perf_counter()
            samples = run_requests(client, workload, requests, concurrency, endpoint)
            wall = time.perf_counter() - started
        finally:
            workload.teardown(client)
    data = {"endpoint": endpoint, "concurrency": concurrency, **summarize(samples, wall)}
    ops.emit(data, render)
    if data["ok"] == 0:
        raise typer.Exit(1)
