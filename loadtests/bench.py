"""`make bench`: the Serve graph side by side with the models alone and a naive peer.

Three measurements on this machine and the same images (the sample probe of the
enrolled person and a different person, alternating):
  (a) models: detect + embed one image at a time through `load_pipeline().run`, no
      server: images/s and ms/image (also in batches of 8, to show what batching buys
      here, and from one thread per core, the most the models hold on this machine);
  (b) graph: the Serve app (`serve_config.yaml`, fresh embedded store) under closed-loop
      verify load at increasing concurrency; rps/p50/p95 per step and the highest rps
      whose P95 stays under the verification target (300 ms);
  (c) peer: `loadtests.naive_peer` (one uvicorn process, same models, same store
      engine, no Ray, no batching) under the same steps.
It prints a table and writes `results/bench/bench.json` with the ratios graph/peer and
graph/models. Figures are this machine's; a busy machine gives noisy ones.

    python -m loadtests.bench [--step-seconds 8] [--concurrency 1,2,4,8,16,32] [--config FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from loadtests.launcher import DEFAULT_CONFIG, REPO_ROOT, ServeProcess, free_port, get_json
from serve_app.samples import ENROLLMENT_PHOTOS, data_uri, sample_set

DEFAULT_OUT = REPO_ROOT / "results" / "bench"
TENANT = "bench"
IDENTITY = "bench-person"
PROBES = ("probe_same_person", "different_person")


# --- (a) the models alone ------------------------------------------------------------


def measure_models(seconds: float) -> dict[str, Any]:
    """Sequential detect + embed per image (decode included), then batches of 8."""
    from serve_app.config import Settings
    from serve_app.embedding import EmbedRequest, load_pipeline

    images = [sample_set()[name] for name in PROBES]
    pipeline = load_pipeline(Settings())
    for data in images * 2:  # first runs allocate (and autotune on CUDA)
        pipeline.run([EmbedRequest(data)])

    def rate(batch: int) -> tuple[int, float]:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            pipeline.run([EmbedRequest(images[(done + i) % len(images)]) for i in range(batch)])
            done += batch
        return done, time.perf_counter() - started

    def parallel(streams: int) -> float:
        """`streams` threads, one image per call each: what the machine holds when
        pre- and post-processing of one image overlap the inference of another."""
        with ThreadPoolExecutor(streams) as pool:
            counts = list(pool.map(lambda _: rate(1), range(streams)))
        return sum(done for done, _ in counts) / max(elapsed for _, elapsed in counts)

    single, single_s = rate(1)
    batched, batched_s = rate(8)
    streams = os.cpu_count() or 1
    figures = {
        "provider": pipeline.recognizer.provider,
        "detector_provider": pipeline.detector.provider,
        "images": single,
        "images_per_s": single / single_s,
        "ms_per_image": 1000.0 * single_s / single,
        "batch8_images_per_s": batched / batched_s,
        "parallel_streams": streams,
        "parallel_images_per_s": parallel(streams),
    }
    return figures


# --- (b), (c) closed-loop HTTP load --------------------------------------------------


@dataclass
class Step:
    concurrency: int
    seconds: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass
class Curve:
    label: str
    provider: str | None = None
    startup_s: float | None = None
    steps: list[Step] = field(default_factory=list)

    def best(self, p95_ms: float, max_error_pct: float = 1.0) -> Step | None:
        """The step with the highest rps whose P95 (and error rate) meets the target."""
        good = [s for s in self.steps
                if s.requests and s.p95_ms < p95_ms and 100.0 * s.errors / s.requests < max_error_pct]
        return max(good, key=lambda s: s.rps, default=None)


async def closed_loop(url: str, bodies: list[dict[str, Any]], concurrency: int, warmup_s: float,
                      measure_s: float) -> Step:
    """`concurrency` clients, each sending its next request as soon as the last answers.
    Only answers that arrive inside the measuring window count."""
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    window_start = loop.time() + warmup_s
    window_end = window_start + measure_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        sent = index
        while loop.time() < window_end:
            body = bodies[sent % len(bodies)]
            sent += 1
            started = loop.time()
            try:
                response = await http.post("/api/v1/verify", json=body)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            finished = loop.time()
            if window_start <= finished <= window_end:
                if ok:
                    latencies.append(finished - started)
                else:
                    errors += 1

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(concurrency)))
    values = np.array(latencies) * 1000.0 if latencies else np.zeros(1)
    return Step(
        concurrency=concurrency, seconds=measure_s, requests=len(latencies) + errors, errors=errors,
        rps=len(latencies) / measure_s,
        p50_ms=float(np.percentile(values, 50)), p95_ms=float(np.percentile(values, 95)),
        p99_ms=float(np.percentile(values, 99)),
    )


def seed_and_bodies(url: str) -> list[dict[str, Any]]:
    """Enroll the identity the load verifies against; the request bodies to send."""
    samples = sample_set()
    with httpx.Client(base_url=url, timeout=120) as http:
        response = http.post("/api/v1/enroll_identity", json={
            "tenant_id": TENANT, "identity_id": IDENTITY,
            "images_b64": [data_uri(samples[name]) for name in ENROLLMENT_PHOTOS],
        })
        response.raise_for_status()
        bodies = [{"tenant_id": TENANT, "identity_id": IDENTITY, "image_b64": data_uri(samples[name])}
                  for name in PROBES]
        for body in bodies * 3:  # warm every path once (store search on a pass, too)
            http.post("/api/v1/verify", json=body).raise_for_status()
    return bodies


def load_curve(curve: Curve, url: str, args: argparse.Namespace) -> None:
    bodies = seed_and_bodies(url)
    for concurrency in args.concurrency:
        step = asyncio.run(closed_loop(url, bodies, concurrency, args.warmup_seconds, args.step_seconds))
        curve.steps.append(step)
        print(f"  {curve.label:<6} c={concurrency:<3} {step.rps:6.1f} rps  p50 {step.p50_ms:5.0f} ms  "
              f"p95 {step.p95_ms:5.0f} ms  errors {step.errors}", flush=True)
        if step.p95_ms > args.stop_factor * args.p95_ms:
            break  # saturated: more clients only lengthen the queue


def health_provider(url: str) -> str | None:
    _, body = get_json(f"{url}/api/v1/health")
    return ((body or {}).get("components", {}).get("embedder", {}) or {}).get("provider")


def measure_server(name: str, server: Any, args: argparse.Namespace) -> Curve:
    """Start a server (anything with start/stop/url/data_dir), load it step by step, stop it
    and remove its data."""
    curve = Curve(name)
    try:
        curve.startup_s = server.start()
        curve.provider = health_provider(server.url)
        load_curve(curve, server.url, args)
    finally:
        server.stop()
        shutil.rmtree(server.data_dir, ignore_errors=True)
    return curve


def run_graph(args: argparse.Namespace) -> Curve:
    data_dir = Path(tempfile.mkdtemp(prefix="face-bench-graph-"))
    return measure_server("graph", ServeProcess(data_dir, config=args.config, log_path=args.out / "serve.log"), args)


class PeerProcess:
    """`python -m loadtests.naive_peer` as a child on its own port and store."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.data_dir, self.log_path = data_dir, log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 180.0) -> float:
        env = {**os.environ, "QDRANT_PATH": str(self.data_dir / "qdrant")}
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "loadtests.naive_peer", "--port", str(self.port)],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"the naive peer exited with {self.process.returncode}; see {self.log_path}")
            try:
                if get_json(f"{self.url}/api/v1/health", timeout=2)[0] == 200:
                    return time.monotonic() - started
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"the naive peer was not healthy within {timeout_s}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def run_peer(args: argparse.Namespace) -> Curve:
    data_dir = Path(tempfile.mkdtemp(prefix="face-bench-peer-"))
    return measure_server("peer", PeerProcess(data_dir, args.out / "peer.log"), args)


# --- report ----------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def report(models: dict[str, Any] | None, curves: list[Curve], args: argparse.Namespace) -> dict[str, Any]:
    best = {curve.label: curve.best(args.p95_ms) for curve in curves}
    graph_rps = best["graph"].rps if best.get("graph") else None
    peer_rps = best["peer"].rps if best.get("peer") else None
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "config": str(args.config),
        "p95_target_ms": args.p95_ms,
        "step_seconds": args.step_seconds,
        "models": models,
        "curves": {curve.label: {"provider": curve.provider, "startup_s": curve.startup_s,
                                 "steps": [asdict(step) for step in curve.steps],
                                 "best": asdict(best[curve.label]) if best[curve.label] else None}
                   for curve in curves},
        "ratios": {
            "graph_over_peer": ratio(graph_rps, peer_rps),
            "graph_over_models": ratio(graph_rps, models["images_per_s"] if models else None),
            "graph_over_models_parallel": ratio(graph_rps, models["parallel_images_per_s"] if models else None),
        },
    }


def print_report(data: dict[str, Any]) -> None:
    target = data["p95_target_ms"]
    print()
    models = data["models"]
    if models:
        print(f"(a) models alone ({models['provider']}): {models['images_per_s']:.1f} images/s, "
              f"{models['ms_per_image']:.1f} ms/image, one at a time; batches of 8: "
              f"{models['batch8_images_per_s']:.1f} images/s; {models['parallel_streams']} threads: "
              f"{models['parallel_images_per_s']:.1f} images/s")
    header = f"{'':<6} {'clients':>7} {'rps':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6}"
    for label, curve in data["curves"].items():
        name = "(b) Serve graph" if label == "graph" else "(c) naive peer"
        print(f"\n{name} verify, closed loop ({curve['provider']}):")
        print(header)
        for step in curve["steps"]:
            mark = " <- best under target" if curve["best"] and step == curve["best"] else ""
            print(f"{label:<6} {step['concurrency']:>7} {step['rps']:>7.1f} {step['p50_ms']:>7.0f} "
                  f"{step['p95_ms']:>7.0f} {step['p99_ms']:>7.0f} {step['errors']:>6}{mark}")
    print(f"\nhighest verify rps with P95 < {target:g} ms:")
    for label, curve in data["curves"].items():
        best = curve["best"]
        print(f"  {label:<6} " + (f"{best['rps']:.1f} rps at {best['concurrency']} clients (p95 {best['p95_ms']:.0f} ms)"
                                  if best else "none: no step met the target"))
    for key, value in data["ratios"].items():
        print(f"  {key.replace('_', ' ')}: " + (f"{value:.2f}" if value is not None else "n/a"))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=lambda text: [int(v) for v in text.split(",")],
                        default=[1, 2, 4, 8, 16, 32], help="closed-loop client counts, in order")
    parser.add_argument("--step-seconds", type=float, default=8.0, help="measuring window per step")
    parser.add_argument("--warmup-seconds", type=float, default=2.0, help="unmeasured start of each step")
    parser.add_argument("--models-seconds", type=float, default=6.0, help="per models measurement")
    parser.add_argument("--p95-ms", type=float, default=300.0, help="verification P95 target")
    parser.add_argument("--stop-factor", type=float, default=2.5,
                        help="stop a curve after a step whose P95 exceeds this many times the target")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="Serve config for the graph")
    parser.add_argument("--only", default="models,graph,peer", help="which measurements to run")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    models = None
    if "models" in args.only:
        print("(a) models alone ...", flush=True)
        models = measure_models(args.models_seconds)
        gc.collect()  # the sessions and their thread pools go before the servers start
    curves = []
    if "graph" in args.only:
        print("(b) Serve graph ...", flush=True)
        curves.append(run_graph(args))
    if "peer" in args.only:
        print("(c) naive peer ...", flush=True)
        curves.append(run_peer(args))
    data = report(models, curves, args)
    print_report(data)
    path = args.out / "bench.json"
    path.write_text(json.dumps(data, indent=2))
    print(f"\nwritten: {path}")


if __name__ == "__main__":
    main()
