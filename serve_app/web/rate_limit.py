"""Per-caller request rates: a token bucket for each API key, so one tenant's burst cannot
starve the others. Buckets live in the Gateway replica: with N replicas behind the proxy a
caller gets up to N times the rate (configs/production.yaml sizes for that)."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """`rate` requests per second on average, bursts of up to `burst`, per caller name."""

    def __init__(self, rate: float, burst: int, max_callers: int = 10_000) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_callers = max_callers
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, caller: str, now: float | None = None) -> float:
        """0 if the caller may go now (a token is taken), else the seconds until it may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            bucket = self._buckets.pop(caller, None) or _Bucket(float(self.burst), now)
            bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            self._buckets[caller] = bucket  # most recently used last
            while len(self._buckets) > self.max_callers:
                self._buckets.popitem(last=False)  # a forgotten caller starts with a full bucket
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                return 0.0
            return (1.0 - bucket.tokens) / self.rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
