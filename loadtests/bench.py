"""`make bench`: the Serve graph side by side with two one-process peers, on the same images.

Measured in one run, on this machine, with the same request bodies:
  models: detect + embed one image at a time through `load_pipeline().run`, no server
      (also in batches of 8 and from one thread per core), for reference;
  graph: the Serve app (`serve_config.yaml`, fresh embedded store);
  insightface (peer a, "the user's alternative"): `loadtests.insightface_peer`, a
      one-process app written the way InsightFace's docs show (cv2.imdecode, the model
      zoo's detector at 640 and recognizer, templates in the same Qdrant Edge store);
  inprocess (peer b): `loadtests.naive_peer`, this service's own app and pipeline in one
      process without Ray: what it saves over the graph is what the graph's hops cost.
All servers run at once and take turns: each step (probe kind, client count) runs on
every server before the next, so a shared machine's drift falls on all alike (an idle
server's background work is part of that noise). Each step is closed-loop verify load,
for each probe kind:
`small` (the sample probe of the enrolled person and a different person, alternating)
and `phone12mp` (the same two as 12 MP phone photos with EXIF orientation,
`loadtests.phone_photo`). Per step: verify/s, p50/p95/p99 and CPU milliseconds per
verification by process role (`loadtests.cpu_roles`: Serve proxy, Gateway, FaceEmbedder,
FaceStore, Ray's system processes; the whole process for a peer). Reported: the highest
verify/s whose P95 stays under the target (300 ms) per server and probe kind, the ratios
graph/insightface and graph/inprocess, and the CPU per verification side by side. Written
to `results/bench/bench.json`. Figures are this machine's; on a shared machine compare
ratios within one run only.

    python -m loadtests.bench [--step-seconds 8] [--concurrency 1,2,4,8,16] [--probes small,phone12mp]
                              [--only models,graph,insightface,inprocess] [--config FILE] [--quick]
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from loadtests.cpu_roles import CpuMeter, Snapshot, per_request_ms
from loadtests.launcher import DEFAULT_CONFIG, REPO_ROOT, ServeProcess, free_port, get_json
from loadtests.phone_photo import phone_probes
from serve_app.samples import ENROLLMENT_PHOTOS, data_uri, sample_set

DEFAULT_OUT = REPO_ROOT / "results" / "bench"
TENANT = "bench"
IDENTITY = "bench-person"
PROBES = ("probe_same_person", "different_person")
SERVERS = ("graph", "insightface", "inprocess")
PEER_MODULES = {"insightface": "loadtests.insightface_peer", "inprocess": "loadtests.naive_peer"}
# The in-process peer runs the models as the graph's FaceEmbedder replicas do (one
# onnxruntime thread per call, serve_config.yaml), so that the two differ only by the
# graph's hops. Peer (a) keeps onnxruntime's defaults, as a user's script would.
PEER_ENV = {"inprocess": {"ORT_INTRA_OP_THREADS": "1"}, "insightface": {}}
PROBE_KINDS = ("small", "phone12mp")
LABELS = {
    "graph": "Serve graph",
    "insightface": "peer (a) insightface-docs app",
    "inprocess": "peer (b) in-process pipeline",
}
# Roles in the order the CPU table shows them.
ROLE_COLUMNS = ("proxy", "gateway", "embedder", "store", "ray_system", "peer", "total")


# --- the models alone ------------------------------------------------------------------
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


# --- closed-loop HTTP load ---------------------------------------------------------------


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
    cpu_ms: dict[str, float] = field(default_factory=dict)  # role -> CPU ms per verification


@dataclass
class Curve:
    server: str
    probe: str
    provider: str | None = None
    steps: list[Step] = field(default_factory=list)

    def best(self, p95_ms: float, max_error_pct: float = 1.0) -> Step | None:
        """The step with the highest rps whose P95 (and error rate) meets the target."""
        good = [s for s in self.steps
                if s.requests and s.p95_ms < p95_ms and 100.0 * s.errors / s.requests < max_error_pct]
        return max(good, key=lambda s: s.rps, default=None)


async def closed_loop(url: str, bodies: list[bytes], concurrency: int, warmup_s: float, measure_s: float,
                      meter: CpuMeter | None = None) -> Step:
    """`concurrency` clients, each sending its next request as soon as the last answers.
    Only answers that arrive inside the measuring window count; the CPU meter reads the
    server's processes at the window's start and end."""
    latencies: list[float] = []
    errors = 0
    loop = asyncio.get_running_loop()
    window_start = loop.time() + warmup_s
    window_end = window_start + measure_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    headers = {"content-type": "application/json"}
    snapshots: list[Snapshot] = []

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        sent = index
        while loop.time() < window_end:
            body = bodies[sent % len(bodies)]
            sent += 1
            started = loop.time()
            try:
                response = await http.post("/api/v1/verify", content=body, headers=headers)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            finished = loop.time()
            if window_start <= finished <= window_end:
                if ok:
                    latencies.append(finished - started)
                else:
                    errors += 1

    async def read_cpu() -> None:
        if meter is None:
            return
        await asyncio.sleep(max(0.0, window_start - loop.time()))
        snapshots.append(meter.snapshot())
        await asyncio.sleep(max(0.0, window_end - loop.time()))
        snapshots.append(meter.snapshot())

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        await asyncio.gather(read_cpu(), *(client(i, http) for i in range(concurrency)))
    values = np.array(latencies) * 1000.0 if latencies else np.zeros(1)
    return Step(
        concurrency=concurrency, seconds=measure_s, requests=len(latencies) + errors, errors=errors,
        rps=len(latencies) / measure_s,
        p50_ms=float(np.percentile(values, 50)), p95_ms=float(np.percentile(values, 95)),
        p99_ms=float(np.percentile(values, 99)),
        cpu_ms=per_request_ms(snapshots[0], snapshots[1], len(latencies) + errors) if len(snapshots) == 2 else {},
    )


def probe_images(kinds: list[str]) -> dict[str, dict[str, bytes]]:
    """Probe kind -> {sample name: image bytes}, the same for every server."""
    images: dict[str, dict[str, bytes]] = {}
    if "small" in kinds:
        samples = sample_set()
        images["small"] = {name: samples[name] for name in PROBES}
    if "phone12mp" in kinds:
        images["phone12mp"] = phone_probes(PROBES)
    return images


def verify_bodies(images: dict[str, bytes]) -> list[bytes]:
    """Serialized once: the load generator should spend its CPU on sending, not on JSON."""
    return [json.dumps({"tenant_id": TENANT, "identity_id": IDENTITY, "image_b64": data_uri(data)}).encode()
            for data in images.values()]


def enroll(url: str) -> None:
    """Enroll the identity the load verifies against."""
    samples = sample_set()
    with httpx.Client(base_url=url, timeout=120) as http:
        response = http.post("/api/v1/enroll_identity", json={
            "tenant_id": TENANT, "identity_id": IDENTITY,
            "images_b64": [data_uri(samples[name]) for name in ENROLLMENT_PHOTOS],
        })
        response.raise_for_status()


def warm(url: str, bodies: list[bytes]) -> list[float]:
    """Every path once (store search on a pass, too); the similarities each probe got."""
    similarities = []
    with httpx.Client(base_url=url, timeout=120, headers={"content-type": "application/json"}) as http:
        for body in bodies * 3:
            response = http.post("/api/v1/verify", content=body)
            response.raise_for_status()
            similarities.append(float(response.json()["similarity"]))
    return similarities[:len(bodies)]


class Server(Protocol):
    data_dir: Path

    @property
    def url(self) -> str: ...

    @property
    def pids(self) -> list[int]: ...

    def start(self) -> float: ...

    def stop(self) -> None: ...


class PeerProcess:
    """A one-process peer (`python -m <module> --port N`) as a child on its own port and store."""

    def __init__(self, module: str, data_dir: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.module, self.data_dir, self.log_path = module, data_dir, log_path
        self.env = env or {}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    def start(self, timeout_s: float = 180.0) -> float:
        env = {**os.environ, **self.env, "QDRANT_PATH": str(self.data_dir / "qdrant")}
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, "--port", str(self.port)],
                cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        while time.monotonic() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.module} exited with {self.process.returncode}; see {self.log_path}")
            try:
                if get_json(f"{self.url}/api/v1/health", timeout=2)[0] == 200:
                    return time.monotonic() - started
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"{self.module} was not healthy within {timeout_s}s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


def make_server(name: str, args: argparse.Namespace) -> Server:
    data_dir = Path(tempfile.mkdtemp(prefix=f"face-bench-{name}-"))
    if name == "graph":
        return ServeProcess(data_dir, config=args.config, log_path=args.out / "serve.log")
    return PeerProcess(PEER_MODULES[name], data_dir, args.out / f"{name}.log", PEER_ENV[name])


def health_provider(url: str) -> str | None:
    _, body = get_json(f"{url}/api/v1/health")
    return ((body or {}).get("components", {}).get("embedder", {}) or {}).get("provider")


def measure_all(names: list[str], images: dict[str, dict[str, bytes]],
                args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Start every server, then load them in turn, step by step: each step of each probe
    kind runs on every server before the next step starts, so that the shared machine's
    drift falls on all of them alike. Stops the servers and removes their data."""
    servers: dict[str, Server] = {}
    measured: dict[str, dict[str, Any]] = {name: {"startup_s": None, "similarities": {}, "curves": []}
                                           for name in names}
    try:
        for name in names:
            print(f"starting {LABELS[name]} ...", flush=True)
            servers[name] = make_server(name, args)
            measured[name]["startup_s"] = servers[name].start()
            enroll(servers[name].url)
        meters = {name: CpuMeter(server.pids, fixed_role=None if name == "graph" else "peer")
                  for name, server in servers.items()}
        providers = {name: health_provider(server.url) for name, server in servers.items()}
        for kind, kind_images in images.items():
            bodies = verify_bodies(kind_images)
            curves = {name: Curve(name, kind, providers[name]) for name in names}
            for name, server in servers.items():
                measured[name]["similarities"][kind] = dict(zip(kind_images, warm(server.url, bodies), strict=True))
            saturated: set[str] = set()
            for concurrency in args.concurrency:
                for name, server in servers.items():
                    if name in saturated:
                        continue
                    step = asyncio.run(closed_loop(server.url, bodies, concurrency, args.warmup_seconds,
                                                   args.step_seconds, meters[name]))
                    curves[name].steps.append(step)
                    cpu = step.cpu_ms.get("total", float("nan"))
                    print(f"  {name:<11} {kind:<9} c={concurrency:<3} {step.rps:6.1f} rps  p50 {step.p50_ms:5.0f} ms"
                          f"  p95 {step.p95_ms:5.0f} ms  errors {step.errors}  cpu {cpu:5.1f} ms/verify", flush=True)
                    if step.p95_ms > args.stop_factor * args.p95_ms:
                        saturated.add(name)  # more clients only lengthen its queue
            for name in names:
                measured[name]["curves"].append(curves[name])
    finally:
        for server in servers.values():
            server.stop()
            shutil.rmtree(server.data_dir, ignore_errors=True)
    return measured


# --- report ----------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def _as_dict(step: Step | None) -> dict[str, Any] | None:
    return asdict(step) if step is not None else None


def cpu_reference(curve: Curve, concurrency: int) -> Step | None:
    """The step whose CPU figures the report compares: the one at `concurrency` clients,
    else the last one measured below it."""
    steps = [s for s in curve.steps if s.concurrency <= concurrency and s.cpu_ms]
    return steps[-1] if steps else None


def report(models: dict[str, Any] | None, measured: dict[str, dict[str, Any]],
           args: argparse.Namespace) -> dict[str, Any]:
    curves: dict[str, dict[str, Curve]] = {}
    for name, result in measured.items():
        for curve in result["curves"]:
            curves.setdefault(curve.probe, {})[name] = curve
    per_probe: dict[str, Any] = {}
    for kind, by_server in curves.items():
        best = {name: curve.best(args.p95_ms) for name, curve in by_server.items()}
        cpu = {name: cpu_reference(curve, args.cpu_at) for name, curve in by_server.items()}
        rps = {name: step.rps if step else None for name, step in best.items()}
        cpu_total = {name: step.cpu_ms.get("total") if step else None for name, step in cpu.items()}
        per_probe[kind] = {
            "servers": {name: {"provider": curve.provider,
                               "steps": [asdict(step) for step in curve.steps],
                               "best": _as_dict(best[name]),
                               "cpu_reference": _as_dict(cpu[name])}
                        for name, curve in by_server.items()},
            "ratios": {
                "graph_over_insightface_rps": ratio(rps.get("graph"), rps.get("insightface")),
                "graph_over_inprocess_rps": ratio(rps.get("graph"), rps.get("inprocess")),
                "graph_over_inprocess_cpu": ratio(cpu_total.get("graph"), cpu_total.get("inprocess")),
                "graph_over_insightface_cpu": ratio(cpu_total.get("graph"), cpu_total.get("insightface")),
            },
        }
    return {
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_end": os.getloadavg()},
        "config": str(args.config),
        "p95_target_ms": args.p95_ms,
        "step_seconds": args.step_seconds,
        "cpu_reference_concurrency": args.cpu_at,
        "models": models,
        "startup_s": {name: result["startup_s"] for name, result in measured.items()},
        "similarities": {name: result["similarities"] for name, result in measured.items()},
        "probes": per_probe,
    }


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return format(value, spec) if value is not None else "n/a"


def print_report(data: dict[str, Any]) -> None:
    target = data["p95_target_ms"]
    print()
    models = data["models"]
    if models:
        print(f"models alone ({models['provider']}): {models['images_per_s']:.1f} images/s, "
              f"{models['ms_per_image']:.1f} ms/image, one at a time; batches of 8: "
              f"{models['batch8_images_per_s']:.1f} images/s; {models['parallel_streams']} threads: "
              f"{models['parallel_images_per_s']:.1f} images/s")
    header = f"{'server':<12} {'clients':>7} {'rps':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'errors':>6} " \
             f"{'cpu ms/verify':>13}"
    for kind, probe in data["probes"].items():
        print(f"\n=== probe {kind}: verify, closed loop ===")
        print(header)
        for name, server in probe["servers"].items():
            for step in server["steps"]:
                mark = " <- best under target" if server["best"] and step == server["best"] else ""
                cpu = _fmt(step["cpu_ms"].get("total"), ".1f")
                print(f"{name:<12} {step['concurrency']:>7} {step['rps']:>7.1f} {step['p50_ms']:>7.0f} "
                      f"{step['p95_ms']:>7.0f} {step['p99_ms']:>7.0f} {step['errors']:>6} {cpu:>13}{mark}")
        print(f"highest verify/s with P95 < {target:g} ms:")
        for name, server in probe["servers"].items():
            best = server["best"]
            print(f"  {LABELS[name]:<32} " + (
                f"{best['rps']:.1f} verify/s at {best['concurrency']} clients (p95 {best['p95_ms']:.0f} ms)"
                if best else "none: no step met the target"))
        print(f"CPU ms per verification by role (at {data['cpu_reference_concurrency']} clients or the last "
              "step below):")
        print(f"  {'server':<12} {'clients':>7} " + " ".join(f"{role:>10}" for role in ROLE_COLUMNS))
        for name, server in probe["servers"].items():
            step = server["cpu_reference"]
            if step:
                print(f"  {name:<12} {step['concurrency']:>7} "
                      + " ".join(f"{_fmt(step['cpu_ms'].get(role), '.1f'):>10}" for role in ROLE_COLUMNS))
        for key, value in probe["ratios"].items():
            print(f"  {key.replace('_', ' ')}: {_fmt(value)}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    def numbers(text: str) -> list[int]:
        return [int(v) for v in text.split(",")]

    def names(choices: tuple[str, ...]) -> Callable[[str], list[str]]:
        def parse_names(text: str) -> list[str]:
            chosen = [part.strip() for part in text.split(",") if part.strip()]
            unknown = sorted(set(chosen) - set(choices))
            if unknown:
                raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {', '.join(choices)}")
            return chosen
        return parse_names

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--concurrency", type=numbers, default=[1, 2, 4, 8, 16],
                        help="closed-loop client counts, in order")
    parser.add_argument("--step-seconds", type=float, default=8.0, help="measuring window per step")
    parser.add_argument("--warmup-seconds", type=float, default=2.0, help="unmeasured start of each step")
    parser.add_argument("--models-seconds", type=float, default=6.0, help="per models measurement")
    parser.add_argument("--p95-ms", type=float, default=300.0, help="verification P95 target")
    parser.add_argument("--cpu-at", type=int, default=8, help="clients of the step whose CPU figures are compared")
    parser.add_argument("--stop-factor", type=float, default=5.0,
                        help="stop a curve after a step whose P95 exceeds this many times the target")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="Serve config for the graph")
    parser.add_argument("--only", type=names(("models", *SERVERS)), default=["models", *SERVERS],
                        help="which measurements to run, in order")
    parser.add_argument("--probes", type=names(PROBE_KINDS), default=list(PROBE_KINDS), help="probe kinds")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 and 2 clients, 2 s steps, no models measurement")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.concurrency, args.step_seconds, args.warmup_seconds = [1, 2], 2.0, 0.5
        args.only = [name for name in args.only if name != "models"]
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    models = None
    if "models" in args.only:
        print("models alone ...", flush=True)
        models = measure_models(args.models_seconds)
        gc.collect()  # the sessions and their thread pools go before the servers start
    images = probe_images(args.probes)
    measured = measure_all([name for name in args.only if name != "models"], images, args)
    data = report(models, measured, args)
    print_report(data)
    path = args.out / "bench.json"
    path.write_text(json.dumps(data, indent=2))
    print(f"\nwritten: {path}")
    return data


if __name__ == "__main__":
    main()
