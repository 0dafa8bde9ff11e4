"""Locust scenarios for the face service, with the deployment plan's targets enforced.

Users (weights give the default mix; name classes on the command line to run a subset):
- EnrollmentUser: enrolls a new identity from three photos (frontal, left, right);
- VerificationUser: the same person (verified), a different person (not verified) and
  an identity nobody enrolled (404 `identity_not_enrolled`, the correct answer, so it
  counts as a success);
- SearchUser: legacy 1:N search over the tenant's gallery;
- IngestUser: a crawler feeding new gallery photos through POST /api/v1/ingest.

Before users start (`test_start`), identities are enrolled and a small gallery ingested.
When Locust quits, each endpoint is judged against its target (`loadtests.targets`);
a missed target is printed and sets a non-zero exit code.

Run it through `make loadtest` (starts the app) or against a running app:
    locust -f loadtests/locustfile.py --headless -u 8 -r 2 -t 60s -H http://127.0.0.1:8001
This file's options (targets, `--iterations`, seeding: see `add_options`) work on the
command line but Locust's `--help` does not list them. `--run-time` includes seeding.
Never import this module from a process that runs Ray or the app: `import locust`
monkey-patches the whole process with gevent.
"""

from __future__ import annotations

import json
import logging
import random
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
import requests
from locust import HttpUser, events, task
from locust.env import Environment
from locust.exception import StopUser

# Locust puts this file's folder on sys.path, not the repository root: add it, so the
# shared modules import by their package names whichever way Locust was started.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.targets import (
    DEFAULT_MAX_ERROR_PCT,
    DEFAULT_P95_MS,
    ENROLL,
    INGEST,
    P95_OPTION,
    SEARCH,
    VERIFY,
    EndpointFigures,
    Targets,
    format_table,
    judge,
    summary,
)
from serve_app.samples import ENROLLMENT_PHOTOS, data_uri, sample_set, synthetic_gallery

logger = logging.getLogger("loadtest")


@dataclass
class Fixtures:
    """Request images and seeded ids, built once per run in `test_start`."""

    tenant: str = "loadtest"
    headers: dict[str, str] = field(default_factory=dict)
    identities: list[str] = field(default_factory=list)
    images: dict[str, str] = field(default_factory=dict)  # sample name -> data URI
    crawl: list[str] = field(default_factory=list)  # gallery photos the IngestUser sends
    ready: bool = False


@dataclass
class RequestBudget:
    """`--iterations N`: at most N requests in total, then Locust quits."""

    limit: int = 0  # 0 = unlimited
    started: int = 0
    finished: int = 0

    def take(self) -> bool:
        if self.limit and self.started >= self.limit:
            return False
        self.started += 1
        return True

    def done(self, environment: Environment) -> None:
        self.finished += 1
        if self.limit and self.finished >= self.limit and environment.runner is not None:
            # Not from this user's greenlet: quitting kills every user greenlet.
            gevent.spawn(environment.runner.quit)


FIXTURES = Fixtures()
BUDGET = RequestBudget()


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    group = parser.add_argument_group("face-pipeline targets and seeding")
    for path in (ENROLL, VERIFY, SEARCH):
        group.add_argument(P95_OPTION[path], type=float, default=DEFAULT_P95_MS[path],
                           help=f"P95 target of {path} in ms (plan: {DEFAULT_P95_MS[path]:g})")
    group.add_argument(P95_OPTION[INGEST], type=float, default=0.0,
                       help="ingestion P95 target in ms (0 = none; the plan sets none)")
    group.add_argument("--max-error-pct", type=float, default=DEFAULT_MAX_ERROR_PCT,
                       help="error rate target per endpoint, percent (plan: < 1)")
    group.add_argument("--no-targets", action="store_true", default=False,
                       help="report the figures but do not enforce the targets")
    group.add_argument("--iterations", type=int, default=0,
                       help="stop after this many requests in total (0 = until --run-time)")
    group.add_argument("--think-min-s", type=float, default=0.5, help="shortest pause between a user's requests")
    group.add_argument("--think-max-s", type=float, default=1.5, help="longest pause between a user's requests")
    group.add_argument("--tenant", default="loadtest",
                       help="tenant all requests use (with a tenant's API key: that key's tenant)")
    group.add_argument("--api-key", default="", env_var="LOCUST_API_KEY",
                       help="sent as X-API-Key when the app has AUTH_ENABLED (better: the env variable)")
    group.add_argument("--seed-identities", type=int, default=3, help="identities enrolled before the run")
    group.add_argument("--seed-gallery", type=int, default=8, help="gallery photos ingested before the run")
    group.add_argument("--crawl-pool", type=int, default=24,
                       help="distinct photos the IngestUser cycles through (repeats are de-duplicated)")
    group.add_argument("--summary-json", default="", help="write per-endpoint figures and verdicts here")


def targets_from(options: Any) -> Targets:
    return Targets(
        p95_ms={ENROLL: options.p95_enroll_ms, VERIFY: options.p95_verify_ms, SEARCH: options.p95_search_ms,
                INGEST: options.p95_ingest_ms or None},
        max_error_pct=options.max_error_pct,
    )


def _post(session: requests.Session, host: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = session.post(host.rstrip("/") + path, json=body, timeout=120)
    if response.status_code != 200:
        raise RuntimeError(f"seeding {path} answered {response.status_code}: {response.text[:300]}")
    return response.json()


@events.test_start.add_listener
def seed(environment: Environment, **_: Any) -> None:
    """Enroll the identities verification uses and ingest the gallery search sees.

    Idempotent: re-enrolling replaces a template and a re-ingested photo is recognised
    as already ingested, so a second run against the same app finds the same state."""
    options = environment.parsed_options
    if options is None or environment.host is None:
        return
    samples = sample_set()
    FIXTURES.tenant = options.tenant
    FIXTURES.headers = {"X-API-Key": options.api_key} if options.api_key else {}
    FIXTURES.images = {name: data_uri(data) for name, data in samples.items()}
    FIXTURES.identities = [f"seed-person-{index}" for index in range(max(1, options.seed_identities))]
    FIXTURES.crawl = [data_uri(data) for _, data in synthetic_gallery(options.crawl_pool, seed=1)]
    BUDGET.limit, BUDGET.started, BUDGET.finished = options.iterations, 0, 0
    enrollment = [FIXTURES.images[name] for name in ENROLLMENT_PHOTOS]
    try:
        with requests.Session() as session:
            session.headers.update(FIXTURES.headers)
            for identity in FIXTURES.identities:
                _post(session, environment.host, ENROLL, {"tenant_id": FIXTURES.tenant, "identity_id": identity,
                                                          "images_b64": enrollment})
            gallery = [data for _, data in synthetic_gallery(options.seed_gallery, seed=0)]
            for index, data in enumerate(gallery):
                _post(session, environment.host, INGEST, {"tenant_id": FIXTURES.tenant, "site": "seed.example",
                                                          "url": f"https://seed.example/{index}.jpg",
                                                          "image_b64": data_uri(data)})
    except (requests.RequestException, RuntimeError) as error:
        logger.error("seeding failed, stopping the run: %s", error)
        environment.process_exit_code = 1
        if environment.runner is not None:
            gevent.spawn(environment.runner.quit)
        return
    FIXTURES.ready = True
    logger.info("seeded tenant %s: %d identities, %d gallery photos", FIXTURES.tenant,
                len(FIXTURES.identities), len(gallery))


@events.quitting.add_listener
def enforce_targets(environment: Environment, **_: Any) -> None:
    options = environment.parsed_options
    if options is None or environment.stats is None:
        return
    figures = [
        EndpointFigures(
            method=entry.method or "", name=entry.name, requests=entry.num_requests, failures=entry.num_failures,
            rps=entry.total_rps, p50_ms=entry.get_response_time_percentile(0.5),
            p95_ms=entry.get_response_time_percentile(0.95), p99_ms=entry.get_response_time_percentile(0.99),
        )
        for entry in sorted(environment.stats.entries.values(), key=lambda e: e.name)
    ]
    targets = targets_from(options)
    enforced = not options.no_targets
    verdicts = judge(figures, targets) if enforced else None
    data = summary(figures, verdicts, targets)
    if options.summary_json:
        Path(options.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(options.summary_json).write_text(json.dumps(data, indent=2))
    print("\n" + format_table(data), flush=True)
    if not enforced:
        return
    missed = [verdict for verdict in verdicts or [] if not verdict.met]
    crashed = environment.runner.exceptions if environment.runner is not None else {}
    if not figures:
        print("target MISSED: no request was made", flush=True)
        environment.process_exit_code = 1
    elif crashed:
        # A scenario that raises is broken, whatever the figures say.
        print(f"FAILED: the scenarios raised {len(crashed)} kind(s) of exception (see the log)", flush=True)
        environment.process_exit_code = 1
    elif missed:
        for verdict in missed:
            print(verdict.describe(), flush=True)
        environment.process_exit_code = 1
    elif environment.process_exit_code is None:
        # Met targets win over Locust's default (exit 1 on any failure): < 1% is allowed.
        print("all targets met", flush=True)
        environment.process_exit_code = 0


class FaceUser(HttpUser):
    abstract = True

    def wait_time(self) -> float:
        options = self.environment.parsed_options
        low, high = (options.think_min_s, options.think_max_s) if options else (0.5, 1.5)
        return random.uniform(low, max(low, high))

    def on_start(self) -> None:
        if not FIXTURES.ready:
            raise StopUser()

    def post(self, path: str, body: dict[str, Any], expect: Any) -> None:
        """One request, counted against `--iterations`; `expect(response)` returns an
        error message or None."""
        if not BUDGET.take():
            raise StopUser()
        try:
            with self.client.post(path, json=body, name=path, headers=FIXTURES.headers,
                                  catch_response=True) as response:
                problem = expect(response)
                if problem:
                    response.failure(problem)
                else:
                    response.success()
        finally:
            BUDGET.done(self.environment)


def status_is(code: int, **fields: Any) -> Any:
    def check(response: Any) -> str | None:
        if response.status_code != code:
            return f"expected {code}, got {response.status_code}: {response.text[:200]}"
        try:
            body = response.json()
        except ValueError:
            return "answer is not JSON"
        for key, value in fields.items():
            if body.get(key) != value:
                return f"expected {key}={value!r}, got {body.get(key)!r}"
        return None

    return check


class EnrollmentUser(FaceUser):
    weight = 1

    @task
    def enroll(self) -> None:
        images = [FIXTURES.images[name] for name in ENROLLMENT_PHOTOS]
        self.post(ENROLL, {"tenant_id": FIXTURES.tenant, "identity_id": f"enroll-{uuid.uuid4().hex[:16]}",
                           "images_b64": images}, status_is(200, ok=True))


class VerificationUser(FaceUser):
    weight = 4

    def _verify(self, identity: str, image: str, expect: Any) -> None:
        self.post(VERIFY, {"tenant_id": FIXTURES.tenant, "identity_id": identity,
                           "image_b64": FIXTURES.images[image]}, expect)

    @task(3)
    def same_person(self) -> None:
        self._verify(random.choice(FIXTURES.identities), "probe_same_person", status_is(200, verified=True))

    @task(1)
    def different_person(self) -> None:
        self._verify(random.choice(FIXTURES.identities), "different_person", status_is(200, verified=False))

    @task(1)
    def unknown_identity(self) -> None:
        # The right answer for an identity nobody enrolled is a 404: a success here.
        self._verify(f"unknown-{uuid.uuid4().hex[:12]}", "probe_same_person",
                     status_is(404, detail="identity_not_enrolled"))


class SearchUser(FaceUser):
    weight = 2

    @task
    def search(self) -> None:
        image = random.choice(("probe_same_person", "different_person"))
        self.post(SEARCH, {"tenant_id": FIXTURES.tenant, "image_b64": FIXTURES.images[image], "top_k": 10},
                  status_is(200))


class IngestUser(FaceUser):
    weight = 1

    @task
    def ingest(self) -> None:
        index = random.randrange(len(FIXTURES.crawl))
        self.post(INGEST, {"tenant_id": FIXTURES.tenant, "site": "crawler.example",
                           "url": f"https://crawler.example/{index}.jpg", "image_b64": FIXTURES.crawl[index]},
                  status_is(200))
