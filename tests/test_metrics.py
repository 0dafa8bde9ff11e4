"""What the Gateway records for the plan's dashboards (metric objects replaced by recorders)."""

from __future__ import annotations

import threading

import pytest

from serve_app.gauge_refresh import GaugeRefresher
from serve_app.metrics import ServiceMetrics
from tests.fakes import recorded_metrics


@pytest.fixture
def metrics() -> ServiceMetrics:
    return recorded_metrics()


def test_successful_enrollment_counts_request_attempt_success_and_latency(metrics) -> None:
    metrics.request_done("enroll_identity", 200, None, 0.12)
    assert metrics.requests.calls == [("inc", 1.0, {"endpoint": "enroll_identity", "status": "200"})]
    assert len(metrics.enroll_attempts.calls) == 1
    assert len(metrics.enroll_success.calls) == 1
    assert metrics.enroll_latency.calls == [("observe", 0.12, {"outcome": "ok"})]
    assert metrics.errors.calls == []


def test_refused_enrollment_counts_error_and_its_latency_not_success(metrics) -> None:
    metrics.request_done("enroll_identity", 422, "no_face_detected", 0.05)
    assert len(metrics.enroll_attempts.calls) == 1
    assert metrics.enroll_success.calls == []
    assert metrics.enroll_latency.calls == [("observe", 0.05, {"outcome": "refused"})]
    assert metrics.errors.calls == [("inc", 1.0, {"endpoint": "enroll_identity", "code": "no_face_detected"})]


def test_failed_requests_are_labelled_failed(metrics) -> None:
    metrics.request_done("verify", 503, "backend_unavailable", 0.4)
    metrics.request_done("ingest", 500, None, 0.2)
    assert metrics.verify_latency.calls == [("observe", 0.4, {"outcome": "failed"})]
    assert metrics.ingest_latency.calls == [("observe", 0.2, {"outcome": "failed"})]
    assert [call[2] for call in metrics.requests.calls] == [{"endpoint": "verify", "status": "503"},
                                                            {"endpoint": "ingest", "status": "500"}]
    assert [call[2] for call in metrics.errors.calls] == [{"endpoint": "verify", "code": "backend_unavailable"},
                                                          {"endpoint": "ingest", "code": "internal_error"}]


def test_verification_records_pass_rate_and_similarity(metrics) -> None:
    for verified, similarity in ((True, 0.87), (False, 0.45)):
        metrics.request_done("verify", 200, None, 0.1)
        metrics.verification_result(verified, similarity)
    assert len(metrics.verify_attempts.calls) == 2
    assert len(metrics.verify_verified.calls) == 1
    assert [call[1] for call in metrics.similarity_hist.calls] == [0.87, 0.45]
    assert metrics.similarity_last.calls[-1] == ("set", 0.45, None)


def test_refusals_of_every_endpoint_are_counted_with_a_code(metrics) -> None:
    metrics.request_done("search", 422, "top_k_out_of_range", 0.01)
    metrics.request_done("search", 200, None, 0.02)
    metrics.request_done("delete_identity", 404, None, 0.01)  # a handler that named no code
    assert metrics.errors.calls == [("inc", 1.0, {"endpoint": "search", "code": "top_k_out_of_range"}),
                                    ("inc", 1.0, {"endpoint": "delete_identity", "code": "not_found"})]
    assert metrics.search_latency.calls == [("observe", 0.01, {"outcome": "refused"}),
                                            ("observe", 0.02, {"outcome": "ok"})]
    assert len(metrics.requests.calls) == 3


def test_component_health_is_a_gauge_per_component(metrics) -> None:
    metrics.component_health("store", False)
    metrics.component_health("embedder", True)
    assert metrics.component_healthy.calls == [("set", 0.0, {"component": "store"}),
                                               ("set", 1.0, {"component": "embedder"})]


def test_refresh_sets_the_gauges_again_to_their_last_values(metrics) -> None:
    metrics.refresh_gauges()  # nothing recorded yet: nothing to set
    assert metrics.similarity_last.calls == [] and metrics.component_healthy.calls == []
    metrics.verification_result(True, 0.91)
    metrics.component_health("store", False)
    metrics.refresh_gauges()
    assert metrics.similarity_last.calls == [("set", 0.91, None)] * 2
    assert metrics.component_healthy.calls == [("set", 0.0, {"component": "store"})] * 2


def test_gauge_refresher_calls_until_stopped_and_survives_a_failure() -> None:
    calls: list[int] = []
    done = threading.Event()

    def refresh() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("store briefly down")
        if len(calls) >= 3:
            done.set()

    refresher = GaugeRefresher(refresh, 0.01).start()
    assert done.wait(5)
    refresher.stop()
    stopped_at = len(calls)
    done.wait(0.05)
    assert len(calls) == stopped_at >= 3
