"""Where one request's time went, for its `Server-Timing` response header.

The HTTP middleware opens a `RequestTimings` per request (a context variable, so the
flows and the deployment clients add to it without being handed it); the typed clients
time the store calls, and each embedder answer carries the stage times of the model
batch it ran in. A batch that served several images of one request (an enrollment's
photos) is counted once: the request waited for it once.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

# The stages of the header, in its order; "total" is the whole request.
STAGES = ("decode", "detect", "embed", "store")
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class BatchTimings:
    """Seconds one embedder batch spent in each model stage (the batch's wall time)."""

    decode: float
    detect: float
    embed: float
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def stages(self) -> tuple[tuple[str, float], ...]:
        return (("decode", self.decode), ("detect", self.detect), ("embed", self.embed))


class RequestTimings:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._batches: set[str] = set()

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def add_batch(self, timings: BatchTimings) -> None:
        if timings.batch_id in self._batches:
            return
        self._batches.add(timings.batch_id)
        for stage_name, seconds in timings.stages():
            self.add(stage_name, seconds)

    def header(self, total_seconds: float) -> str:
        """`decode;dur=1.2, detect;dur=8.9, ..., total;dur=40.1` (milliseconds)."""
        parts = [(stage, self.seconds.get(stage, 0.0)) for stage in STAGES] + [("total", total_seconds)]
        return ", ".join(f"{stage};dur={seconds * 1000:.1f}" for stage, seconds in parts)


_current: ContextVar[RequestTimings | None] = ContextVar("request_timings", default=None)


def current() -> RequestTimings | None:
    return _current.get()


@contextmanager
def request_timings() -> Iterator[RequestTimings]:
    """The timings of the request handled inside (HTTP middleware)."""
    timings = RequestTimings()
    token = _current.set(timings)
    try:
        yield timings
    finally:
        _current.reset(token)


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Add the time spent inside to the current request's stage (if any request is timed)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings = _current.get()
        if timings is not None:
            timings.add(name, time.perf_counter() - started)


def timed_stage(name: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """Decorator: the awaited call's time goes to the current request's stage `name`."""
    def decorate(call: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(call)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            with stage(name):
                return await call(*args, **kwargs)
        return timed
    return decorate


def record_batch(timings: BatchTimings | None) -> None:
    current_timings = _current.get()
    if current_timings is not None and timings is not None:
        current_timings.add_batch(timings)
