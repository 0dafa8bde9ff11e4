"""`make loadtest`: start the app on a fresh embedded store, run Locust headless against
it, print the per-endpoint table, stop the app; the exit code says whether every target
was met.

    python -m loadtests.run [--users 8] [--spawn-rate 2] [--run-time 60s] [--host URL]
                            [locust options, e.g. --p95-verify-ms 1 or VerificationUser]

Options this driver does not know go to Locust unchanged (see `loadtests/locustfile.py`
for the target, seeding and `--iterations` options). Reports land in `results/loadtest/`
(CSV, HTML, summary.json, the app's log). Locust runs as a child process: `import
locust` monkey-patches its whole process with gevent, which must not meet this one.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.launcher import DEFAULT_CONFIG, REPO_ROOT, ServeProcess

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
DEFAULT_OUT = REPO_ROOT / "results" / "loadtest"


@dataclass
class LoadRun:
    users: int = 8
    spawn_rate: float = 2.0
    run_time: str = "60s"
    host: str | None = None  # None: start the app from `config` on a fresh store
    out: Path = DEFAULT_OUT
    config: Path = DEFAULT_CONFIG
    locust_args: list[str] = field(default_factory=list)
    # Hard stop for Locust itself, beyond --run-time (start-up, seeding, shutdown).
    timeout_s: float = 900.0


def locust_command(run: LoadRun, host: str) -> list[str]:
    prefix = run.out / "locust"
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary",
        "--host", host, "--users", str(run.users), "--spawn-rate", str(run.spawn_rate),
        "--run-time", run.run_time, "--csv", str(prefix), "--html", str(run.out / "report.html"),
        "--summary-json", str(run.out / "summary.json"), *run.locust_args,
    ]


def run_locust(run: LoadRun, host: str) -> int:
    command = locust_command(run, host)
    print("$ " + " ".join(command[1:]), flush=True)
    try:
        return subprocess.run(command, check=False, cwd=REPO_ROOT, timeout=run.timeout_s).returncode
    except subprocess.TimeoutExpired:
        print(f"locust did not finish within {run.timeout_s:.0f}s", file=sys.stderr)
        return 124


def execute(run: LoadRun) -> int:
    """The whole run; returns the process exit code (0 only if every target was met)."""
    run.out.mkdir(parents=True, exist_ok=True)
    (run.out / "summary.json").unlink(missing_ok=True)
    if run.host:
        code = run_locust(run, run.host)
    else:
        # A fresh store each run: results never depend on what an earlier run left.
        data_dir = Path(tempfile.mkdtemp(prefix="face-loadtest-"))
        app = ServeProcess(data_dir, config=run.config, log_path=run.out / "serve.log")
        try:
            (run.out / "serve.log").unlink(missing_ok=True)
            print(f"starting the app ({run.config.name}, store in {data_dir}) ...", flush=True)
            seconds = app.start()
            print(f"app healthy after {seconds:.0f}s on {app.url}", flush=True)
            code = run_locust(run, app.url)
        finally:
            app.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
    # Locust itself printed the per-endpoint table and every missed target.
    if not (run.out / "summary.json").is_file():
        print("Locust wrote no summary (see its output above)")
    app_log = "" if run.host else ", serve.log"
    print(f"\nreports: {run.out}/ (report.html, locust_stats.csv, summary.json{app_log})")
    print("result: " + ("PASS" if code == 0 else f"FAIL (exit {code})"))
    return code


def parse(argv: list[str] | None = None) -> LoadRun:
    base = LoadRun()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="Unknown options are passed to Locust.")
    parser.add_argument("--users", "-u", type=int, default=base.users, help="concurrent Locust users")
    parser.add_argument("--spawn-rate", "-r", type=float, default=base.spawn_rate, help="users started per second")
    parser.add_argument("--run-time", "-t", default=base.run_time,
                        help="how long Locust runs, seeding included (e.g. 60s, 5m)")
    parser.add_argument("--host", default=base.host, help="an app already running; default: start one")
    parser.add_argument("--out", type=Path, default=base.out, help="report folder")
    parser.add_argument("--config", type=Path, default=base.config, help="Serve config to start the app from")
    args, locust_args = parser.parse_known_args(argv)
    return LoadRun(users=args.users, spawn_rate=args.spawn_rate, run_time=args.run_time, host=args.host,
                   out=args.out, config=args.config, locust_args=locust_args)


def main(argv: list[str] | None = None) -> None:
    sys.exit(execute(parse(argv)))


def preset_main(user_class: str, concurrent: int, iterations: int, label: str,
                argv: list[str] | None = None) -> None:
    """The plan's Phase 4.3 scripts: `concurrent` clients back to back (no think time),
    `iterations` requests in all, of one user class, targets enforced."""
    parser = argparse.ArgumentParser(
        description=f"{label.capitalize()} load test (deployment plan, Phase 4.3).",
        epilog="Unknown options are passed to Locust (see loadtests/locustfile.py).")
    parser.add_argument("--concurrent", type=int, default=concurrent, help="clients sending back to back")
    parser.add_argument("--iterations", type=int, default=iterations, help="requests in all")
    parser.add_argument("--host", default=None, help="an app already running; default: start one")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT / label, help="report folder")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="Serve config to start the app from")
    parser.add_argument("--max-time", default="10m", help="stop even if the iterations are not done")
    args, locust_args = parser.parse_known_args(argv)
    run = LoadRun(
        users=args.concurrent, spawn_rate=float(args.concurrent), run_time=args.max_time, host=args.host,
        out=args.out, config=args.config,
        # Options given on the command line come after these defaults, so they win;
        # the user class goes last, after every option.
        locust_args=["--iterations", str(args.iterations), "--think-min-s", "0", "--think-max-s", "0",
                     *locust_args, user_class],
    )
    sys.exit(execute(run))


if __name__ == "__main__":
    main()
