"""The bounded queue in front of the engine: overload and cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from tiergate.engine.generate import Engine, Finished, GenerationRequest, TextDelta
from tiergate.engine.runner import EngineRunner
from tiergate.engine.sampling import SamplingParams
from tiergate.errors import OverloadedError

pytestmark = pytest.mark.slow

LONG = GenerationRequest([{"role": "user", "content": "Count from one to one hundred."}],
                         SamplingParams(max_tokens=200, temperature=0.0))


def started(engine: Engine, workers: int = 1, queue_size: int = 1) -> EngineRunner:
    runner = EngineRunner(lambda: engine, workers=workers, queue_size=queue_size)
    runner.start()
    assert runner.wait_ready(60)
    return runner


async def test_full_queue_raises_overloaded(engine: Engine) -> None:
    runner = started(engine)
    streams = []
    with pytest.raises(OverloadedError) as info:
        for _ in range(4):  # one running + one waiting fill it; a third or fourth is refused
            streams.append(runner.submit(LONG))
    assert info.value.status == 429 and info.value.retry_after > 0
    for s in streams:
        await s.aclose()
    runner.stop()


async def test_abandoned_stream_frees_the_worker(engine: Engine) -> None:
    runner = started(engine)
    stream = runner.submit(LONG)
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()  # the client hung up
    deadline = time.monotonic() + 60
    while runner.busy and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert runner.busy == 0
    short = GenerationRequest(LONG.messages, SamplingParams(max_tokens=2, temperature=0.0))
    events = [e async for e in runner.submit(short)]
    assert isinstance(events[-1], Finished) and events[-1].usage.completion_tokens == 2
    runner.stop()
