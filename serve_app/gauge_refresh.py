"""Keeps Ray gauges exported between changes.

Ray's metrics agent drops a gauge series that has not been set within two report
intervals (Ray 2.60: `open_telemetry_metric_recorder`, gauge TTL), so a value set once,
such as the latest verification's similarity, a collection's size or a component's
health, vanishes from /metrics about 20 s after it was set. A deployment that owns such
gauges runs one `GaugeRefresher`, which sets them again every half report interval.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

logger = logging.getLogger("ray.serve")


def report_interval_s() -> float:
    """How often this Ray process reports metrics (`RAY_metrics_report_interval_ms`, at least 1 s)."""
    import ray

    return max(int(ray._config.metrics_report_interval_ms()), 1000) / 1000


class Periodic:
    """Calls `work()` every `period_s` in a daemon thread until stopped; a call that raises
    is logged and the next one still runs (a store briefly down must not end the loop)."""

    def __init__(self, work: Callable[[], object], period_s: float, name: str) -> None:
        self._work = work
        self._period_s = period_s
        self._name = name
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Periodic:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped.wait(self._period_s):
            try:
                self._work()
            except Exception:
                logger.warning("%s failed", self._name, exc_info=True)


class GaugeRefresher(Periodic):
    def __init__(self, refresh: Callable[[], object], period_s: float) -> None:
        super().__init__(refresh, period_s, "gauge-refresh")
