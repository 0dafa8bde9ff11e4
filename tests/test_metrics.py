"""What the Gateway records for the plan's dashboards (metric objects replaced by recorders)."""

from __future__ import annotations

import pytest

from serve_app.metrics import ServiceMetrics
from tests.fakes import recorded_metrics


@pytest.fixture
def metrics() -> ServiceMetrics:
    return recorded_metrics()


def test_successful_enrollment_counts_attempt_success_and_latency(metrics) -> None:
    metrics.request_done("enroll_identity", 200, None, 0.12)
    assert len(metrics.enroll_attempts.calls) == 1
    assert len(metrics.enroll_success.calls) == 1
    assert metrics.enroll_latency.calls == [("observe", 0.12, None)]
    assert metrics.errors.calls == []


def test_refused_enrollment_counts_error_by_code_not_success(metrics) -> None:
    metrics.request_done("enroll_identity", 422, "no_face_detected", 0.05)
    assert len(metrics.enroll_attempts.calls) == 1
    assert metrics.enroll_success.calls == [] and metrics.enroll_latency.calls == []
    assert metrics.errors.calls == [("inc", 1.0, {"endpoint": "enroll_identity", "code": "no_face_detected"})]


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
    assert metrics.search_latency.calls == [("observe", 0.02, None)]
