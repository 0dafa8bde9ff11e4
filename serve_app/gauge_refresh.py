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


class GaugeRefresher:
    def __init__(self, refresh: Callable[[], object], period_s: float) -> None:
        self._refresh = refresh
        self._period_s = period_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gauge-refresher", daemon=True)

    def start(self) -> GaugeRefresher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stopped.wait(self._period_s):
            try:
                self._refresh()
            except Exception:  # a failed refresh must not end the loop (a store briefly down)
                logger.warning("gauge refresh failed", exc_info=True)
