"""The deployment plan's Prometheus metrics, recorded in the Gateway.

Every HTTP request reaches `ServiceMetrics.request_done` once, through the
`serve_app.web.request_metrics` middleware; routes add only what they alone know (a
verification's outcome and similarity).

Ray exports application metrics through each node's metrics agent and prefixes them
with `ray_` (e.g. `ray_enrollment_attempts_total`); see README "Monitoring".
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram

LATENCY_BUCKETS_S = [0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0]
SIMILARITY_BUCKETS = [0.5, 0.6, 0.7, 0.75, 0.78, 0.8, 0.85, 0.9, 0.95]
# Error answers whose handler named no code (e.g. a 404 of an unknown path).
_STATUS_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 413: "request_too_large", 422: "invalid_request", 429: "rate_limited",
                 500: "internal_error", 503: "backend_unavailable"}


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
        self.search_latency = Histogram("search_latency_seconds", description="Legacy search latency",
                                        boundaries=LATENCY_BUCKETS_S)
        # Ray annotates tag_keys as a 1-tuple (Tuple[str]); any number of keys works.
        self.errors = Counter("api_errors", description="Refused requests by endpoint and code",
                              tag_keys=("endpoint", "code"))  # type: ignore[arg-type]

    def request_done(self, endpoint: str, status: int, code: str | None, seconds: float) -> None:
        """One finished HTTP request: the plan's per-endpoint counts and every refusal."""
        ok = status < 400
        if endpoint == "enroll_identity":
            self.enroll_attempts.inc()
            if ok:
                self.enroll_success.inc()
                self.enroll_latency.observe(seconds)
        elif endpoint == "verify":
            self.verify_attempts.inc()
            if ok:
                self.verify_latency.observe(seconds)
        elif endpoint == "search" and ok:
            self.search_latency.observe(seconds)
        if not ok:
            code = code or _STATUS_CODES.get(status, f"http_{status}")
            self.errors.inc(tags={"endpoint": endpoint, "code": code})

    def verification_result(self, verified: bool, similarity: float) -> None:
        if verified:
            self.verify_verified.inc()
        self.similarity_last.set(similarity)
        self.similarity_hist.observe(similarity)
