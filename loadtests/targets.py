"""The deployment plan's success criteria as data, judged against per-endpoint figures.

Plain Python with no Locust import: the Locust file judges its own run with it, and the
driver (`loadtests.run`) prints the same table from the summary the Locust file wrote.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ENROLL = "/api/v1/enroll_identity"
VERIFY = "/api/v1/verify"
SEARCH = "/api/v1/search"
INGEST = "/api/v1/ingest"

# Plan, Phase 4.3 and "Success Criteria": enrollment < 500 ms, verification < 300 ms,
# legacy search within the general "< 500 ms P95", error rate < 1%. Ingestion has no
# latency target in the plan; it is judged on errors only unless an option adds one.
DEFAULT_P95_MS: dict[str, float | None] = {ENROLL: 500.0, VERIFY: 300.0, SEARCH: 500.0, INGEST: None}
DEFAULT_MAX_ERROR_PCT = 1.0

# The command-line option that sets each endpoint's P95 target (named in verdicts).
P95_OPTION = {ENROLL: "--p95-enroll-ms", VERIFY: "--p95-verify-ms", SEARCH: "--p95-search-ms",
              INGEST: "--p95-ingest-ms"}


@dataclass(frozen=True)
class Targets:
    p95_ms: dict[str, float | None] = field(default_factory=lambda: dict(DEFAULT_P95_MS))
    max_error_pct: float = DEFAULT_MAX_ERROR_PCT


@dataclass(frozen=True)
class EndpointFigures:
    """One endpoint's outcome over a run, as Locust counted it."""

    method: str
    name: str
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float

    @property
    def error_pct(self) -> float:
        return 100.0 * self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Verdict:
    endpoint: str
    target: str  # e.g. "p95 < 300 ms"
    measured: str
    met: bool
    option: str  # the command-line option that sets this target

    def describe(self) -> str:
        state = "met" if self.met else "MISSED"
        return f"target {state}: {self.endpoint} {self.target} (measured {self.measured}; {self.option})"


def judge(figures: list[EndpointFigures], targets: Targets) -> list[Verdict]:
    """Every target that applies to an endpoint that saw requests, met or not."""
    verdicts: list[Verdict] = []
    for row in figures:
        if not row.requests:
            continue
        label = f"{row.method} {row.name}"
        limit = targets.p95_ms.get(row.name)
        if limit is not None:
            verdicts.append(Verdict(label, f"p95 < {limit:g} ms", f"{row.p95_ms:.0f} ms", row.p95_ms < limit,
                                    P95_OPTION[row.name]))
        verdicts.append(Verdict(label, f"errors < {targets.max_error_pct:g}%", f"{row.error_pct:.2f}%",
                                row.error_pct < targets.max_error_pct, "--max-error-pct"))
    return verdicts


def summary(figures: list[EndpointFigures], verdicts: list[Verdict] | None, targets: Targets) -> dict[str, Any]:
    """What the Locust file writes as JSON (`--summary-json`) for the driver and tests."""
    return {
        "endpoints": [asdict(row) | {"error_pct": row.error_pct} for row in figures],
        "targets": {"p95_ms": targets.p95_ms, "max_error_pct": targets.max_error_pct,
                    "enforced": verdicts is not None},
        "verdicts": [asdict(verdict) for verdict in verdicts or []],
        "passed": all(verdict.met for verdict in verdicts or []),
    }


def format_table(data: dict[str, Any]) -> str:
    """The per-endpoint table (requests, RPS, p50, p95, p99, errors, target met)."""
    verdicts: dict[str, list[dict[str, Any]]] = {}
    for verdict in data["verdicts"]:
        verdicts.setdefault(verdict["endpoint"], []).append(verdict)
    header = f"{'endpoint':<30} {'requests':>8} {'rps':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} " \
             f"{'errors':>12}  target met"
    lines = [header, "-" * len(header)]
    for row in data["endpoints"]:
        label = f"{row['method']} {row['name']}"
        judged = verdicts.get(label, [])
        if not data["targets"]["enforced"]:
            met = "not enforced"
        elif not judged:
            met = "-"
        else:
            met = ", ".join(f"{'yes' if v['met'] else 'NO'} ({v['target']})" for v in judged)
        errors = f"{row['failures']} ({row['error_pct']:.1f}%)"
        lines.append(f"{label:<30} {row['requests']:>8} {row['rps']:>7.2f} {row['p50_ms']:>7.0f} "
                     f"{row['p95_ms']:>7.0f} {row['p99_ms']:>7.0f} {errors:>12}  {met}")
    return "\n".join(lines)
