"""What the Gateway records for the plan's dashboards (metric objects replaced by recorders)."""

from __future__ import annotations

import pytest

from serve_app.errors import DomainError
from serve_app.metrics import ServiceMetrics


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object, object]] = []

    def inc(self, value: float = 1.0, tags: dict | None = None) -> None:
        self.calls.append(("inc", value, tags))

    def observe(self, value: float, tags: dict | None = None) -> None:
        self.calls.append(("observe", value, tags))

    def set(self, value: float, tags: dict | None = None) -> None:
        self.calls.append(("set", value, tags))


@pytest.fixture
def metrics() -> ServiceMetrics:
    service = ServiceMetrics()
    for name, value in list(vars(service).items()):
        if hasattr(value, "inc") or hasattr(value, "observe") or hasattr(value, "set"):
            setattr(service, name, Recorder())
    return service


def test_successful_enrollment_counts_attempt_success_and_latency(metrics) -> None:
    with metrics.enrollment() as outcome:
        outcome.success = True
    assert len(metrics.enroll_attempts.calls) == 1
    assert len(metrics.enroll_success.calls) == 1
    assert metrics.enroll_latency.calls[0][0] == "observe"


def test_refused_enrollment_counts_error_by_code_not_success(metrics) -> None:
    with pytest.raises(DomainError):
        with metrics.enrollment():
            raise DomainError("no_face_detected")
    assert len(metrics.enroll_attempts.calls) == 1
    assert metrics.enroll_success.calls == [] and metrics.enroll_latency.calls == []
    assert metrics.errors.calls == [("inc", 1.0, {"endpoint": "enroll_identity", "code": "no_face_detected"})]


def test_verification_records_pass_rate_and_similarity(metrics) -> None:
    with metrics.verification() as outcome:
        outcome.record(True, 0.87)
    with metrics.verification() as outcome:
        outcome.record(False, 0.45)
    assert len(metrics.verify_attempts.calls) == 2
    assert len(metrics.verify_verified.calls) == 1
    assert [call[1] for call in metrics.similarity_hist.calls] == [0.87, 0.45]
    assert metrics.similarity_last.calls[-1] == ("set", 0.45, None)


def test_refusals_outside_enroll_and_verify_are_counted_too(metrics) -> None:
    with pytest.raises(DomainError):
        with metrics.refusals("search"):
            raise DomainError("top_k_out_of_range")
    with metrics.refusals("search"):
        pass
    assert metrics.errors.calls == [("inc", 1.0, {"endpoint": "search", "code": "top_k_out_of_range"})]
