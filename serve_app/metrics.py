"""The deployment plan's Prometheus metrics, recorded in the Gateway.

Ray exports application metrics through each node's metrics agent and prefixes them
with `ray_` (e.g. `ray_enrollment_attempts_total`); see README "Monitoring".
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ray.serve.metrics import Counter, Gauge, Histogram

from serve_app.errors import DomainError

LATENCY_BUCKETS_S = [0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0]
SIMILARITY_BUCKETS = [0.5, 0.6, 0.7, 0.75, 0.78, 0.8, 0.85, 0.9, 0.95]


@dataclass
class _Outcome:
    success: bool = False
    verified: bool = False
    similarity: float | None = None

    def record(self, verified: bool, similarity: float) -> None:
        self.success, self.verified, self.similarity = True, verified, similarity


class ServiceMetrics:
    def __init__(self) -> None:
        self.enroll_attempts = Counter("enrollment_attempts", description="Enrollment requests")
        self.enroll_success = Counter("enrollment_success", description="Enrollments stored")
        self.enroll_latency = Histogram("enrollment_latency_seconds", description="Enrollment latency",
                                        boundaries=LATENCY_BUCKETS_S)
        self.verify_attempts = Counter("verification_attempts", description="Verification requests")
        self.verify_verified = Counter("verification_verified", description="Verifications that passed")
        self.verify_latency = Histogram("verification_latency_seconds", description="Verification latency",
                                        boundaries=LATENCY_BUCKETS_S)
        self.similarity_last = Gauge("verification_similarity_score",
                                     description="Similarity of the latest verification")
        self.similarity_hist = Histogram("verification_similarity", description="Verification similarities",
                                         boundaries=SIMILARITY_BUCKETS)
        self.search_latency_hist = Histogram("search_latency_seconds", description="Legacy search latency",
                                             boundaries=LATENCY_BUCKETS_S)
        self.errors = Counter("api_errors", description="Refused requests by endpoint and code",
                              tag_keys=("endpoint", "code"))

    @contextmanager
    def refusals(self, endpoint: str) -> Iterator[None]:
        """Count every refusal (DomainError) raised inside, by endpoint and code."""
        try:
            yield
        except DomainError as error:
            self.errors.inc(tags={"endpoint": endpoint, "code": error.code})
            raise

    @contextmanager
    def _attempt(self, endpoint: str, attempts: Counter) -> Iterator[tuple[_Outcome, float]]:
        outcome = _Outcome()
        started = time.perf_counter()
        attempts.inc()
        with self.refusals(endpoint):
            yield outcome, started

    @contextmanager
    def enrollment(self) -> Iterator[_Outcome]:
        with self._attempt("enroll_identity", self.enroll_attempts) as (outcome, started):
            yield outcome
        if outcome.success:
            self.enroll_success.inc()
            self.enroll_latency.observe(time.perf_counter() - started)

    @contextmanager
    def verification(self) -> Iterator[_Outcome]:
        with self._attempt("verify", self.verify_attempts) as (outcome, started):
            yield outcome
        if outcome.success:
            self.verify_latency.observe(time.perf_counter() - started)
            if outcome.verified:
                self.verify_verified.inc()
            if outcome.similarity is not None:
                self.similarity_last.set(outcome.similarity)
                self.similarity_hist.observe(outcome.similarity)

    def search_latency(self, seconds: float) -> None:
        self.search_latency_hist.observe(seconds)
