"""The deployment plan's Prometheus metrics, recorded in the Gateway.

Every HTTP request reaches `ServiceMetrics.request_done` once, through the
`serve_app.web.request_metrics` middleware; routes add only what they alone know (a
verification's outcome and similarity, the health probe's findings).

Ray exports application metrics through each node's metrics agent and prefixes them
with `ray_`; deploy/prometheus/prometheus.yml takes the prefix off again for names that
start with `enrollment_`, `verification_`, `search_`, `ingest_`, `api_` (README
"Monitoring"), so a new metric here must start with one of them.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Gauge, Histogram
from ray.util.metrics import Histogram as RayHistogram

LATENCY_BUCKETS_S = [0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0]
SIMILARITY_BUCKETS = [0.5, 0.6, 0.7, 0.75, 0.78, 0.8, 0.85, 0.9, 0.95]
# Error answers whose handler named no code (e.g. a 404 of an unknown path).
_STATUS_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
                 413: "request_too_large", 422: "invalid_request", 429: "rate_limited",
                 500: "internal_error", 503: "backend_unavailable"}


def outcome(status: int) -> str:
    """The latency histograms' label: answered, refused (4xx) or failed (5xx)."""
    return "ok" if status < 400 else "refused" if status < 500 else "failed"


class ServiceMetrics:
    def __init__(self) -> None:
        self.enroll_attempts = Counter("enrollment_attempts", description="Enrollment requests")
        self.enroll_success = Counter("enrollment_success", description="Enrollments stored")
        self.enroll_latency = Histogram("enrollment_latency_seconds", description="Enrollment latency",
                                        boundaries=LATENCY_BUCKETS_S, tag_keys=("outcome",))
        self.verify_attempts = Counter("verification_attempts", description="Verification requests")
        self.verify_verified = Counter("verification_verified", description="Verifications that passed")
        self.verify_latency = Histogram("verification_latency_seconds", description="Verification latency",
                                        boundaries=LATENCY_BUCKETS_S, tag_keys=("outcome",))
        self.similarity_last = Gauge("verification_similarity_score",
                                     description="Similarity of the latest verification")
        self.similarity_hist = Histogram("verification_similarity", description="Verification similarities",
                                         boundaries=SIMILARITY_BUCKETS)
        self.search_latency = Histogram("search_latency_seconds", description="Legacy search latency",
                                        boundaries=LATENCY_BUCKETS_S, tag_keys=("outcome",))
        self.ingest_latency = Histogram("ingest_latency_seconds", description="Gallery ingestion latency",
                                        boundaries=LATENCY_BUCKETS_S, tag_keys=("outcome",))
        # Ray annotates tag_keys as a 1-tuple (Tuple[str]); any number of keys works.
        self.requests = Counter("api_requests", description="API requests by endpoint and HTTP status",
                                tag_keys=("endpoint", "status"))  # type: ignore[arg-type]
        self.errors = Counter("api_errors", description="Refused requests by endpoint and code",
                              tag_keys=("endpoint", "code"))  # type: ignore[arg-type]
        self.component_healthy = Gauge("api_component_healthy",
                                       description="1 if the last health probe found the component up",
                                       tag_keys=("component",))
        # The gauges' last values, set again by `refresh_gauges` (serve_app.gauge_refresh).
        self._last_similarity: float | None = None
        self._health: dict[str, float] = {}

    def _latency(self, endpoint: str) -> RayHistogram | None:
        latencies = {"enroll_identity": self.enroll_latency, "verify": self.verify_latency,
                     "search": self.search_latency, "ingest": self.ingest_latency}
        return latencies.get(endpoint)

    def request_done(self, endpoint: str, status: int, code: str | None, seconds: float) -> None:
        """One finished HTTP request: counted by endpoint and status, its latency (whatever
        the answer, labelled by outcome), the plan's per-endpoint counts, every refusal."""
        ok = status < 400
        self.requests.inc(tags={"endpoint": endpoint, "status": str(status)})
        latency = self._latency(endpoint)
        if latency is not None:
            latency.observe(seconds, tags={"outcome": outcome(status)})
        if endpoint == "enroll_identity":
            self.enroll_attempts.inc()
            if ok:
                self.enroll_success.inc()
        elif endpoint == "verify":
            self.verify_attempts.inc()
        if not ok:
            code = code or _STATUS_CODES.get(status, f"http_{status}")
            self.errors.inc(tags={"endpoint": endpoint, "code": code})

    def verification_result(self, verified: bool, similarity: float) -> None:
        if verified:
            self.verify_verified.inc()
        self._last_similarity = similarity
        self.similarity_last.set(similarity)
        self.similarity_hist.observe(similarity)

    def component_health(self, component: str, healthy: bool) -> None:
        self._health[component] = 1.0 if healthy else 0.0
        self.component_healthy.set(self._health[component], tags={"component": component})

    def refresh_gauges(self) -> None:
        """Set the gauges again to their last values, so Ray keeps exporting them."""
        if self._last_similarity is not None:
            self.similarity_last.set(self._last_similarity)
        for component, value in list(self._health.items()):
            self.component_healthy.set(value, tags={"component": component})
