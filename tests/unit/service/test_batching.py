"""The micro-batcher coalesces concurrent requests without mixing up their answers."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.batching import MicroBatcher, Rows
from service.compiled import Steps

pytestmark = pytest.mark.unit


class SlowDoubler:
    """Predicts 2*x of the first column; records batch sizes; slow enough for requests to pile up."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.release = threading.Event()

    def __call__(self, rows: Rows) -> Rows:
        self.release.wait(5)
        self.sizes.append(rows.shape[0])
        return np.asarray(rows[:, 0] * 2.0)


def test_concurrent_requests_share_batches_and_get_their_own_answers() -> None:
    model = SlowDoubler()

    async def scenario() -> list[Rows]:
        with ThreadPoolExecutor(max_workers=1) as executor:
            batcher = MicroBatcher(model, executor, max_rows=100)
            first = asyncio.ensure_future(batcher.predict(np.array([[1.0]])))
            await asyncio.sleep(0.05)  # the first call is now running, alone
            rest = [
                asyncio.ensure_future(batcher.predict(np.array([[float(i)], [float(i) + 0.5]])))
                for i in range(2, 12)
            ]
            await asyncio.sleep(0.05)
            model.release.set()
            return await asyncio.gather(first, *rest)

    results = asyncio.run(scenario())
    assert results[0].tolist() == [2.0]
    for i, result in zip(range(2, 12), results[1:], strict=True):
        assert result.tolist() == [2.0 * i, 2.0 * i + 1.0]
    assert model.sizes == [1, 20]


def test_batches_respect_max_rows() -> None:
    model = SlowDoubler()

    async def scenario() -> None:
        with ThreadPoolExecutor(max_workers=1) as executor:
            batcher = MicroBatcher(model, executor, max_rows=4)
            calls = [asyncio.ensure_future(batcher.predict(np.ones((3, 1)))) for _ in range(3)]
            await asyncio.sleep(0.05)
            model.release.set()
            await asyncio.gather(*calls)

    asyncio.run(scenario())
    assert model.sizes == [3, 3, 3]


def test_errors_reach_every_waiting_request_and_the_batcher_recovers() -> None:
    calls = 0

    def flaky(rows: Rows) -> Rows:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model exploded")
        return np.zeros(rows.shape[0])

    async def scenario() -> Rows:
        with ThreadPoolExecutor(max_workers=1) as executor:
            batcher = MicroBatcher(flaky, executor, max_rows=10)
            with pytest.raises(RuntimeError, match="exploded"):
                await batcher.predict(np.ones((1, 1)))
            return await batcher.predict(np.ones((2, 1)))

    assert asyncio.run(scenario()).tolist() == [0.0, 0.0]


def test_timed_out_requests_are_skipped() -> None:
    model = SlowDoubler()

    async def scenario() -> Rows:
        with ThreadPoolExecutor(max_workers=1) as executor:
            batcher = MicroBatcher(model, executor, max_rows=10, on_batch=lambda rows: None)
            running = asyncio.ensure_future(batcher.predict(np.ones((1, 1))))
            await asyncio.sleep(0.02)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(batcher.predict(np.full((5, 1), 7.0)), timeout=0.02)
            kept = asyncio.ensure_future(batcher.predict(np.array([[3.0]])))
            model.release.set()
            await running
            return await kept

    assert asyncio.run(scenario()).tolist() == [6.0]
    assert model.sizes == [1, 1]


def test_small_batches_run_inline_and_large_ones_on_the_prediction_thread() -> None:
    threads: list[str] = []

    def record_thread(rows: Rows) -> Rows:
        threads.append(threading.current_thread().name)
        return np.zeros(rows.shape[0])

    async def scenario() -> None:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict") as executor:
            batcher = MicroBatcher(record_thread, executor, max_rows=100, inline_rows=4)
            await batcher.predict(np.ones((4, 1)))
            await batcher.predict(np.ones((5, 1)))

    asyncio.run(scenario())
    assert threads[0] == threading.main_thread().name
    assert threads[1].startswith("predict")


def test_a_large_batch_walked_in_steps_runs_on_the_loop_with_other_work_between_its_steps() -> None:
    """The service's compiled models: no thread, whose GIL waits next to a busy loop starved the batches."""
    events: list[str] = []

    def one_call(rows: Rows) -> Rows:
        events.append(f"one call of {rows.shape[0]} rows")
        return np.zeros(rows.shape[0])

    def in_steps(rows: Rows) -> Steps:
        for step in range(3):
            events.append(f"step {step} on {threading.current_thread().name}")
            yield
        return np.asarray(rows[:, 0] * 2.0)

    async def other_work() -> None:
        for _ in range(4):
            events.append("other work")
            await asyncio.sleep(0)

    async def scenario() -> tuple[Rows, Rows]:
        with ThreadPoolExecutor(max_workers=1) as executor:
            batcher = MicroBatcher(one_call, executor, max_rows=100, inline_rows=4, stepwise=in_steps)
            large = asyncio.ensure_future(batcher.predict(np.arange(5.0).reshape(5, 1)))
            await asyncio.sleep(0)  # the batcher starts the walk
            _, values = await asyncio.gather(other_work(), large)
            return values, await batcher.predict(np.ones((4, 1)))

    large, small = asyncio.run(scenario())
    assert large.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert small.tolist() == [0.0] * 4
    main = threading.main_thread().name
    steps = [events.index(f"step {step} on {main}") for step in range(3)]
    assert steps == sorted(steps)
    between = events[steps[0] : steps[2]]
    assert "other work" in between, events
    assert events[-1] == "one call of 4 rows"


def test_small_requests_are_batched_only_up_to_the_inline_size() -> None:
    sizes: list[tuple[int, str]] = []
    release = threading.Event()

    def record(rows: Rows) -> Rows:
        if threading.current_thread() is not threading.main_thread():
            release.wait(5)
        sizes.append(
            (rows.shape[0], "inline" if threading.current_thread() is threading.main_thread() else "thread")
        )
        return np.zeros(rows.shape[0])

    async def scenario() -> None:
        with ThreadPoolExecutor(max_workers=1) as executor:
            batcher = MicroBatcher(record, executor, max_rows=100, inline_rows=4)
            large = asyncio.ensure_future(batcher.predict(np.ones((10, 1))))
            await asyncio.sleep(0.02)  # the large request holds the prediction thread
            singles = [asyncio.ensure_future(batcher.predict(np.ones((1, 1)))) for _ in range(10)]
            await asyncio.sleep(0.02)
            release.set()
            await asyncio.gather(large, *singles)

    asyncio.run(scenario())
    assert sizes == [(10, "thread"), (4, "inline"), (4, "inline"), (2, "inline")]
