"""The pure parts of `face-ops profile` and `face-ops leaks`."""

from __future__ import annotations

from serve_app.ops.leaks import Usage, verdict
from serve_app.ops.load import Sample, parse_server_timing
from serve_app.ops.profile import summarize


def test_server_timing_header_is_parsed_per_stage() -> None:
    header = 'decode;dur=1.5, embed;desc="detect+embed";dur=12.25, store;dur=2, total;dur=16.1, cache'
    assert parse_server_timing(header) == {"decode": 1.5, "embed": 12.25, "store": 2.0, "total": 16.1}
    assert parse_server_timing(None) == {}
    assert parse_server_timing("embed;dur=abc") == {}


def test_summary_percentiles_errors_and_stages() -> None:
    samples = [Sample(ms / 1000, 200, {"embed": ms * 0.8}) for ms in range(1, 101)] + [Sample(0.5, 503)]
    summary = summarize(samples, wall_s=10.0)
    assert (summary["requests"], summary["ok"], summary["errors"]) == (101, 100, {"503": 1})
    assert summary["latency_ms"]["p50"] == 50.5 and summary["latency_ms"]["max"] == 100.0
    assert summary["throughput_rps"] == 10.1
    assert summary["server_timing"]["embed"]["mean"] == 40.4 and summary["server_timing"]["embed"]["seen"] == 100


def test_leak_verdict() -> None:
    steady = [Usage(500.0, 40, 30), Usage(520.0, 41, 30), Usage(515.0, 40, 31)]
    assert verdict(steady) == "ok"
    growing = [Usage(500.0, 40, 30), Usage(560.0, 40, 30), Usage(620.0, 40, 30)]
    assert "memory grew" in verdict(growing)
    # One jump then flat, or flat then one jump, is a warm-up, not a leak.
    assert verdict([Usage(500.0, 40, 30), Usage(600.0, 40, 30), Usage(599.0, 40, 30)]) == "ok"
    assert verdict([Usage(457.0, 63, 37), Usage(457.2, 63, 37), Usage(490.4, 63, 38)]) == "ok"
    assert "open files" in verdict([Usage(500.0, 40, 30), Usage(500.0, 90, 30)])
    assert "threads" in verdict([Usage(500.0, 40, 30), Usage(500.0, 40, 50)])
