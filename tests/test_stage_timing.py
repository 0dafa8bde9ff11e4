"""Per-request stage timings behind the Server-Timing header."""

from __future__ import annotations

import asyncio
import re

from serve_app import stage_timing
from serve_app.stage_timing import BatchTimings


def test_header_lists_every_stage_and_total_in_milliseconds() -> None:
    with stage_timing.request_timings() as timings:
        timings.add("store", 0.0031)
        stage_timing.record_batch(BatchTimings(decode=0.002, detect=0.0089, embed=0.0101))
    header = timings.header(0.0405)
    assert header == "decode;dur=2.0, detect;dur=8.9, embed;dur=10.1, store;dur=3.1, total;dur=40.5"
    assert re.fullmatch(r"(\w+;dur=\d+\.\d)(, \w+;dur=\d+\.\d)*", header)


def test_one_batch_serving_several_images_of_a_request_counts_once() -> None:
    shared = BatchTimings(decode=0.001, detect=0.010, embed=0.020)
    with stage_timing.request_timings() as timings:
        for _ in range(3):  # three enrollment photos answered by one batch
            stage_timing.record_batch(shared)
        stage_timing.record_batch(BatchTimings(decode=0.001, detect=0.005, embed=0.005))
    assert timings.seconds["detect"] == 0.015 and timings.seconds["embed"] == 0.025


def test_stages_of_concurrent_tasks_reach_their_own_request() -> None:
    async def request(store_calls: int) -> dict[str, float]:
        with stage_timing.request_timings() as timings:
            async def call() -> None:
                with stage_timing.stage("store"):
                    await asyncio.sleep(0.01)
            await asyncio.gather(*(call() for _ in range(store_calls)))
        return timings.seconds

    async def both() -> list[dict[str, float]]:
        return await asyncio.gather(request(1), request(3))

    one, three = asyncio.run(both())
    assert 0.009 < one["store"] < three["store"]
    assert three["store"] >= 0.029


def test_outside_a_request_nothing_is_recorded() -> None:
    with stage_timing.stage("store"):
        pass
    stage_timing.record_batch(BatchTimings(decode=1.0, detect=1.0, embed=1.0))
    assert stage_timing.current() is None
