"""Admission by cost: the cost model learns from busy time; the queue admits, orders and refuses."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, cast

import pytest

from service.admission import (
    HEARTBEAT_IDLE_SECONDS,
    HEARTBEAT_SECONDS,
    KIB,
    LAG_DECAY_PER_BEAT,
    REFUSAL_SPREAD,
    TRACKED_CLIENTS,
    WINDOW_SECONDS,
    Admission,
    CostModel,
    LoopLag,
    QueueOrder,
    Ticket,
    shed_response,
)
from service.config import SERVER_TIMEOUT_MARGIN_SECONDS, ServiceSettings

pytestmark = pytest.mark.unit

SINGLE_KIB = 0.16
BATCH_KIB = 162.0


def test_cost_model_recovers_per_request_and_per_kib_seconds_from_a_mix() -> None:
    model = CostModel(seconds_per_request=0.003, seconds_per_kib=0.0009)  # ten times the true rates
    true_a, true_b = 0.0003, 0.00009
    for window in range(60):
        singles, batches = 200 + window % 7, window % 3
        kib = singles * SINGLE_KIB + batches * BATCH_KIB
        model.observe(true_a * (singles + batches) + true_b * kib, singles + batches, kib)
    assert model.seconds_per_request == pytest.approx(true_a, rel=0.05)
    assert model.seconds_per_kib == pytest.approx(true_b, rel=0.05)
    assert model.estimate(BATCH_KIB) == pytest.approx(true_a + true_b * BATCH_KIB, rel=0.05)


def test_cost_model_fits_single_rows_alone_even_though_their_parts_cannot_be_told_apart() -> None:
    model = CostModel()
    for _ in range(60):
        model.observe(busy_seconds=0.1, requests=200, kib=200 * SINGLE_KIB)
    # 0.1 s for 200 single rows: half a millisecond each, however it is split.
    assert model.estimate(SINGLE_KIB) == pytest.approx(0.0005, rel=0.02)
    assert model.seconds_per_request >= 0.0
    assert model.seconds_per_kib >= 0.0


def test_noise_in_the_busy_time_of_single_rows_does_not_move_the_per_kib_rate() -> None:
    model = CostModel(seconds_per_request=0.0003, seconds_per_kib=0.00009)
    for window in range(200):
        requests = 300 + window % 11
        kib = requests * SINGLE_KIB * (1 + 0.01 * (window % 3 - 1))  # bodies of single rows vary by 1%
        busy = 0.1 * (1 + 0.2 * ((window * 7919) % 13 / 13 - 0.5))  # +-10% noise: refusals, the machine
        model.observe(busy, requests, kib)
    assert model.seconds_per_kib == pytest.approx(0.00009)
    assert model.estimate(SINGLE_KIB) == pytest.approx(0.1 / 305, rel=0.15)


def test_cost_model_never_goes_negative() -> None:
    model = CostModel()
    # Larger bodies finishing faster: the data drives the per-KiB rate below zero.
    model.observe(busy_seconds=0.5, requests=10, kib=1.0)
    model.observe(busy_seconds=0.1, requests=10, kib=100.0)
    assert model.seconds_per_request >= 0.0
    assert model.seconds_per_kib >= 0.0


class Recorder:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)


def admission(
    target: float = 0.01,
    wait: float = 5.0,
    refusal: float = 5.0,
    limit: int = 100,
    order: QueueOrder = "lifo",
    spread: float = 0.0,
) -> tuple[Admission, Recorder]:
    shed = Recorder()
    # Fixed costs (1 ms per request, nothing per KiB) and a clock that never moves: nothing is learnt.
    model = CostModel(seconds_per_request=0.001, seconds_per_kib=0.0)
    gate = Admission(
        target,
        wait,
        refusal,
        limit,
        order,
        on_shed=shed,
        cost_model=model,
        clock=lambda: 0.0,
        refusal_spread=spread,
    )
    return gate, shed


def run(scenario: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(scenario())  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_work_within_the_target_is_admitted_at_once_and_the_rest_waits() -> None:
    async def scenario() -> None:
        gate, shed = admission(target=0.0105)  # ten requests of 1 ms
        tickets = [await gate.enter("100") for _ in range(10)]
        assert all(isinstance(t, Ticket) for t in tickets)
        assert gate.admitted == 10
        waiting = asyncio.ensure_future(gate.enter("100"))
        await settle()
        assert not waiting.done()
        assert gate.waiting == 1
        gate.leave(tickets[0])  # type: ignore[arg-type]
        assert isinstance(await waiting, Ticket)
        assert (gate.admitted, gate.waiting, shed.reasons) == (10, 0, [])

    run(scenario)


def test_a_request_larger_than_the_target_runs_when_nothing_else_is_admitted() -> None:
    async def scenario() -> None:
        gate, _ = admission(target=0.001)
        gate.cost_model.seconds_per_kib = 1.0  # a 1 MiB body costs 1,024 s: far over the target
        ticket = await gate.enter(str(1024 * 1024))
        assert isinstance(ticket, Ticket)
        assert ticket.kib == pytest.approx(1024)
        behind = asyncio.ensure_future(gate.enter("10"))
        await settle()
        assert not behind.done()
        gate.leave(ticket)
        assert isinstance(await behind, Ticket)

    run(scenario)


# Waiter 1 arrives when there is no room: it has the turn and keeps it. Behind it, the configured order.
@pytest.mark.parametrize(("order", "expected"), [("lifo", [1, 3, 2]), ("fifo", [1, 2, 3])])
def test_waiters_are_admitted_in_the_configured_order(order: QueueOrder, expected: list[int]) -> None:
    async def scenario() -> list[int]:
        gate, _ = admission(target=0.001, order=order)  # one request at a time
        first = await gate.enter("1")
        admitted: list[int] = []

        async def client(number: int) -> None:
            ticket = await gate.enter("1")
            assert ticket is not None
            admitted.append(number)
            await asyncio.sleep(0)
            gate.leave(ticket)

        clients = []
        for number in (1, 2, 3):
            clients.append(asyncio.ensure_future(client(number)))
            await settle()
        assert first is not None
        gate.leave(first)
        await asyncio.gather(*clients)
        return admitted

    assert run(scenario) == expected


def test_a_waiter_that_does_not_fit_is_not_skipped_by_smaller_ones_behind_it() -> None:
    async def scenario() -> None:
        gate, _ = admission(target=0.0025, order="fifo")
        gate.cost_model.seconds_per_kib = 0.001 * KIB / 1024  # 1 ms per KiB
        small = [await gate.enter("0"), await gate.enter("0")]  # 2 ms admitted
        large = asyncio.ensure_future(gate.enter(str(2 * 1024)))  # 3 ms: waits
        await settle()
        tiny = asyncio.ensure_future(gate.enter("0"))  # 1 ms would fit, but queues behind the large one
        await settle()
        assert not large.done()
        assert not tiny.done()
        gate.leave(small[0])  # type: ignore[arg-type]
        gate.leave(small[1])  # type: ignore[arg-type]
        assert isinstance(await large, Ticket)
        assert not tiny.done()

    run(scenario)


def test_newer_small_requests_do_not_overtake_a_large_one_that_waits_for_room() -> None:
    async def scenario() -> None:
        gate, _ = admission(target=0.0045, order="lifo")
        gate.cost_model.seconds_per_kib = 0.001  # 1 ms per KiB on top of 1 ms per request
        small = [await gate.enter("0"), await gate.enter("0")]  # 2 ms admitted
        large = asyncio.ensure_future(gate.enter(str(2 * 1024)))  # 3 ms: does not fit yet
        await settle()
        newer = asyncio.ensure_future(gate.enter("0"))  # would fit, and is the newest
        await settle()
        assert not newer.done()
        gate.leave(small[0])  # type: ignore[arg-type]  # 1 ms admitted: room for the large one
        assert isinstance(await large, Ticket)
        await settle()
        assert not newer.done()  # 5 ms would be over the target
        gate.leave(small[1])  # type: ignore[arg-type]
        assert isinstance(await newer, Ticket)

    run(scenario)


def test_a_newer_request_of_the_same_size_does_not_take_the_turn_of_a_large_one_waiting_for_room() -> None:
    # Newest first among equal start tags: without this, each new batch displaced the waiting one, and under
    # a crowd batches were refused more often than single rows.
    async def scenario() -> None:
        gate, _ = admission(target=0.0045, order="lifo")
        gate.cost_model.seconds_per_kib = 0.001  # 1 ms per KiB on top of 1 ms per request
        small = [await gate.enter("0"), await gate.enter("0")]  # 2 ms admitted
        older = asyncio.ensure_future(gate.enter(str(2 * 1024)))  # 3 ms: does not fit yet
        await settle()
        newer = asyncio.ensure_future(gate.enter(str(2 * 1024)))  # the same size, and the newest
        await settle()
        gate.leave(small[0])  # type: ignore[arg-type]  # 1 ms admitted: room for one of them
        first = await older
        assert isinstance(first, Ticket)
        await settle()
        assert not newer.done()
        gate.leave(small[1])  # type: ignore[arg-type]
        await settle()
        assert not newer.done()  # 3 ms admitted and 3 ms more would be over the target
        gate.leave(first)
        assert isinstance(await newer, Ticket)

    run(scenario)


def test_a_request_that_waited_too_long_is_refused_and_counted() -> None:
    async def scenario() -> None:
        gate, shed = admission(target=0.001, wait=0.01, refusal=0.01)
        held = await gate.enter("1")
        late = await gate.enter("1")
        assert held is not None
        assert late is None
        assert shed.reasons == ["queue_timeout"]
        assert gate.waiting == 0
        gate.leave(held)
        assert gate.admitted == 0

    run(scenario)


def test_a_refused_request_is_not_admitted_when_room_frees_and_hears_of_it_at_the_refusal_time() -> None:
    async def scenario() -> None:
        gate, shed = admission(target=0.001, wait=0.01, refusal=1.0)
        held = await gate.enter("1")
        late = asyncio.ensure_future(gate.enter("1"))
        await asyncio.sleep(0.05)  # past the wait, before the refusal
        assert held is not None
        gate.leave(held)  # room for one: but the waiter is refused already
        await settle()
        assert not late.done()
        assert (gate.admitted, gate.waiting) == (0, 1)
        assert await late is None
        assert shed.reasons == ["queue_timeout"]
        assert gate.waiting == 0

    run(scenario)


def test_beyond_the_limit_of_held_requests_refusal_is_immediate() -> None:
    async def scenario() -> None:
        gate, shed = admission(target=0.001, limit=2)
        held = await gate.enter("1")
        waiting = asyncio.ensure_future(gate.enter("1"))
        await settle()
        assert await gate.enter("1") is None
        assert shed.reasons == ["concurrency"]
        assert held is not None
        gate.leave(held)
        assert isinstance(await waiting, Ticket)

    run(scenario)


def test_the_limit_holds_even_when_the_work_would_fit() -> None:
    async def scenario() -> None:
        gate, shed = admission(target=10.0, limit=2)
        assert [await gate.enter("1") is not None for _ in range(3)] == [True, True, False]
        assert shed.reasons == ["concurrency"]

    run(scenario)


def test_a_cancelled_waiter_leaves_the_queue_and_admits_nothing() -> None:
    async def scenario() -> None:
        gate, _ = admission(target=0.001)
        held = await gate.enter("1")
        waiting = asyncio.ensure_future(gate.enter("1"))
        await settle()
        waiting.cancel()
        await settle()
        assert gate.waiting == 0
        assert held is not None
        gate.leave(held)
        assert (gate.admitted, gate.admitted_cost) == (0, 0.0)

    run(scenario)


def test_a_waiter_cancelled_right_after_admission_gives_its_share_back() -> None:
    async def scenario() -> None:
        gate, _ = admission(target=0.001)
        held = await gate.enter("1")
        waiting = asyncio.ensure_future(gate.enter("1"))
        await settle()
        assert held is not None
        gate.leave(held)  # admits the waiter, whose task has not resumed yet
        waiting.cancel()
        await settle()
        assert waiting.cancelled()
        assert (gate.admitted, gate.waiting) == (0, 0)

    run(scenario)


def test_busy_time_teaches_the_cost_model() -> None:
    async def scenario() -> float:
        now = [0.0]
        model = CostModel(seconds_per_request=0.05, seconds_per_kib=0.0)
        gate = Admission(10.0, 1.0, 1.0, 1000, cost_model=model, clock=lambda: now[0])
        # Requests of 2 ms each, two at a time, for well over one window of busy time.
        for _ in range(int(3 * WINDOW_SECONDS / 0.004)):
            first, second = await gate.enter("200"), await gate.enter("200")
            assert first is not None
            assert second is not None
            now[0] += 0.002
            gate.leave(first)
            now[0] += 0.002
            gate.leave(second)
            now[0] += 0.5  # idle time between bursts is not busy time
        return model.estimate(200 / KIB)

    assert run(scenario) == pytest.approx(0.002, rel=0.05)


class SteppedLoop:
    """The two event-loop calls LoopLag makes, on a clock the test moves: timing, not the machine's load."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[..., None], tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.now

    def call_at(
        self, when: float, callback: Callable[..., None], *args: Any
    ) -> tuple[float, Callable[..., None]]:
        self.timers.append((when, callback, args))
        return when, callback  # the handle: LoopLag only checks that it has one

    def run_until(self, now: float) -> None:
        """The loop's turn at ``now``: it runs every timer that is due by then (late if past due)."""
        self.now = now
        while due := [timer for timer in self.timers if timer[0] <= now]:
            self.timers.remove(due[0])
            due[0][1](*due[0][2])


def test_the_loop_lag_is_how_late_the_heartbeat_runs_and_how_overdue_it_is_now() -> None:
    loop = SteppedLoop()
    lag = LoopLag(active=lambda: True)
    running = cast(asyncio.AbstractEventLoop, loop)
    assert lag.delay(running, 0.0) == 0.0  # starts the heartbeat
    for beat in range(1, 6):  # beats on time
        loop.run_until(beat * HEARTBEAT_SECONDS)
    assert lag.delay(running, loop.now) == 0.0
    # A long turn of the loop: the next beat is overdue by 0.2 s right now...
    due = loop.now + HEARTBEAT_SECONDS
    assert lag.delay(running, due + 0.2) == pytest.approx(0.2)
    # ... and once the late beat ran, the lag it measured is remembered, decaying.
    loop.run_until(due + 0.2)
    assert lag.delay(running, loop.now) == pytest.approx(0.2)
    loop.run_until(loop.now + HEARTBEAT_SECONDS)
    assert lag.delay(running, loop.now) == pytest.approx(0.2 * LAG_DECAY_PER_BEAT)


def test_the_heartbeat_stops_after_a_second_without_work() -> None:
    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        busy = [True]
        lag = LoopLag(active=lambda: busy[0])
        lag.delay(loop, loop.time())
        await asyncio.sleep(0.05)
        beating = lag._handle is not None
        busy[0] = False
        await asyncio.sleep(HEARTBEAT_IDLE_SECONDS + 0.3)
        return beating, lag._handle is None

    assert run(scenario) == (True, True)


def test_a_refusal_counts_from_the_arrival_when_the_loop_ran_late() -> None:
    async def scenario() -> float:
        gate, shed = admission(target=0.001, wait=0.05, refusal=0.5)
        held = await gate.enter("1")
        assert held is not None
        first = asyncio.ensure_future(gate.enter("1"))  # waits: the heartbeat runs
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # the loop is 0.3 s late: a request handled now arrived about that long ago
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await gate.enter("1") is None
        assert await first is None
        assert shed.reasons == ["queue_timeout", "queue_timeout"]
        return loop.time() - started

    # 0.5 s after its arrival, 0.3 s before its handler started.
    assert run(scenario) < 0.35


def test_refusal_delays_are_spread_around_the_setting() -> None:
    async def scenario() -> list[float]:
        gate, _ = admission(target=0.001, wait=0.0, refusal=0.2, spread=REFUSAL_SPREAD)
        held = await gate.enter("1")
        assert held is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        answered: list[float] = []

        async def client() -> None:
            assert await gate.enter("1") is None
            answered.append(loop.time() - started)

        await asyncio.gather(*(client() for _ in range(50)))
        return answered

    delays = run(scenario)
    assert min(delays) >= 0.2 * (1 - REFUSAL_SPREAD / 2) - 0.005
    assert max(delays) <= 0.2 * (1 + REFUSAL_SPREAD / 2) + 0.05
    assert max(delays) - min(delays) >= 0.2 * REFUSAL_SPREAD / 4


BATCH_LENGTH = str(144 * 1024)  # with fair_gate's rates: 1 + 9 = 10 ms
SINGLE_LENGTH = "160"  # about 1 ms


def fair_gate(target: float = 0.0105) -> Admission:
    gate, _ = admission(target=target, limit=1000, order="lifo")
    gate.cost_model.seconds_per_kib = 0.001 / 16
    return gate


class Worker:
    """One worker that runs the admitted requests one after another, each for its estimated cost, on a
    simulated clock (no real time passes): how many requests a client gets through depends on their
    cost, as on a real worker."""

    def __init__(self) -> None:
        self.clock = 0.0
        self._runs: asyncio.Queue[tuple[float, asyncio.Future[None]]] = asyncio.Queue()

    async def run(self, cost: float) -> None:
        done = asyncio.get_running_loop().create_future()
        await self._runs.put((cost, done))
        await done

    async def serve(self) -> None:
        while True:
            cost, done = await self._runs.get()
            self.clock += cost
            done.set_result(None)


async def closed_loop(
    gate: Admission,
    patterns: dict[str, list[str]],
    seconds: float,
    new_connections: Collection[str] = (),
    by_length: dict[str, float] | None = None,
) -> dict[str, float]:
    """Clients that send their next request as soon as the last is answered, cycling through their
    pattern of Content-Lengths, until the worker has run ``seconds`` of work: the worker seconds each
    was admitted for (and, into ``by_length``, those of each Content-Length). Each keeps its connection,
    but those named in ``new_connections`` open a new one for every request."""
    worker = Worker()
    serving = asyncio.ensure_future(worker.serve())
    work = dict.fromkeys(patterns, 0.0)
    lengths = by_length if by_length is not None else {}
    connections = itertools.count()

    async def client(name: str, pattern: list[str]) -> None:
        for length in itertools.cycle(pattern):
            if worker.clock >= seconds:
                return
            ticket = await gate.enter(length, next(connections) if name in new_connections else name)
            assert ticket is not None
            await worker.run(ticket.cost)
            work[name] += ticket.cost
            lengths[length] = lengths.get(length, 0.0) + ticket.cost
            gate.leave(ticket)

    await asyncio.gather(*(client(name, pattern) for name, pattern in patterns.items()))
    serving.cancel()
    return work


def clients(batch: int, single: int) -> dict[str, list[str]]:
    return {f"batch-{n}": [BATCH_LENGTH] for n in range(batch)} | {
        f"single-{n}": [SINGLE_LENGTH] for n in range(single)
    }


@pytest.mark.parametrize(("batch_clients", "single_clients"), [(1, 10), (3, 40)])
def test_clients_that_keep_work_waiting_share_the_worker_equally_whatever_their_request_size(
    batch_clients: int, single_clients: int
) -> None:
    """Start-time fair queueing: backlogged clients get the same worker time, within a few requests of
    the largest kind; shared by request size, the batch clients would get half of it between them."""

    async def scenario() -> dict[str, float]:
        gate = fair_gate()
        # Each client's first request waits among the newcomers' (see the next tests): measure after.
        await closed_loop(gate, clients(batch_clients, single_clients), seconds=1.0)
        return await closed_loop(gate, clients(batch_clients, single_clients), seconds=4.0)

    work = run(scenario)
    assert min(work.values()) >= 0.9 * 4.0 / len(work), work
    assert max(work.values()) - min(work.values()) <= 0.03, work


def test_a_light_client_among_heavy_ones_gets_at_least_as_many_turns_as_each_of_them() -> None:
    """A single-row client cannot keep work waiting (its next row comes only once the last is answered,
    and each waits for a batch to finish): it is served at least once in every round of batches."""
    gate = fair_gate()
    work = run(lambda: closed_loop(gate, clients(10, 1), seconds=4.0))
    single_turns = work.pop("single-0") / gate.cost_model.estimate(int(SINGLE_LENGTH) / KIB)
    batch_turns = [seconds / gate.cost_model.estimate(int(BATCH_LENGTH) / KIB) for seconds in work.values()]
    assert single_turns >= max(batch_turns), (single_turns, batch_turns)


def test_a_mixed_client_keeps_its_own_mix() -> None:
    """Identical clients that each send 49 single rows, then a batch: fair by client, the worker serves
    them in that same proportion (the batches' share is 10 ms in 59), not half each as by request size."""
    mixed = [SINGLE_LENGTH] * 49 + [BATCH_LENGTH]
    gate = fair_gate()
    batch_seconds = gate.cost_model.estimate(int(BATCH_LENGTH) / KIB)
    single_seconds = gate.cost_model.estimate(int(SINGLE_LENGTH) / KIB)
    patterns = {f"client-{n}": mixed[n:] + mixed[:n] for n in range(20)}  # not all in step
    by_length: dict[str, float] = {}
    work = run(lambda: closed_loop(gate, patterns, seconds=4.0, by_length=by_length))
    own_mix = batch_seconds / (batch_seconds + 49 * single_seconds)
    assert own_mix == pytest.approx(0.17, abs=0.01)
    assert by_length[BATCH_LENGTH] / sum(by_length.values()) == pytest.approx(own_mix, abs=0.03), by_length
    assert max(work.values()) - min(work.values()) <= 0.03, work


def test_a_flood_of_one_request_connections_cannot_starve_a_client_that_keeps_its_connection() -> None:
    """Clients with no tag of their own yet (each request on a new connection) share one: else each new
    connection's request would start at the clock, ahead of the kept client's next batch, for ever."""

    naive = {f"naive-{n}": [SINGLE_LENGTH] for n in range(100)}
    work = run(lambda: closed_loop(fair_gate(), {"kept": [BATCH_LENGTH]} | naive, 4.0, new_connections=naive))
    kept, flood = work.pop("kept"), sum(work.values())
    assert kept >= 0.3 * (kept + flood), (kept, flood)
    assert flood >= 0.3 * (kept + flood), (kept, flood)


def test_a_client_back_from_idle_cannot_bank_the_time_it_did_not_use() -> None:
    """A client seen once, then idle while three others were served, starts at the virtual clock: it gets
    a quarter of the worker, not every turn until it has caught up with the others."""

    async def scenario() -> dict[str, float]:
        gate = fair_gate(target=0.0015)  # one single row at a time
        ticket = await gate.enter(SINGLE_LENGTH, "returning")
        assert ticket is not None
        gate.leave(ticket)
        await closed_loop(gate, {name: [SINGLE_LENGTH] for name in "abc"}, seconds=0.3)
        return await closed_loop(gate, {name: [SINGLE_LENGTH] for name in ["a", "b", "c", "returning"]}, 0.08)

    work = run(scenario)
    assert work["returning"] == pytest.approx(work["a"], abs=0.003), work


def test_a_refused_request_charges_its_client_nothing() -> None:
    """A batch refused after its wait leaves its client's tag where it was: the client's next single rows
    take their fair turns among the others' (charged 10 ms, they would wait ten turns)."""

    async def scenario() -> dict[str, float]:
        gate, shed = admission(target=0.0015, wait=0.01, refusal=0.01)
        gate.cost_model.seconds_per_kib = 0.001 / 16
        for name in ("refused", "other"):  # both have a tag of their own
            ticket = await gate.enter(SINGLE_LENGTH, name)
            assert ticket is not None
            gate.leave(ticket)
        held = await gate.enter(SINGLE_LENGTH, "other")
        assert held is not None
        assert await gate.enter(BATCH_LENGTH, "refused") is None
        assert shed.reasons == ["queue_timeout"]
        gate.leave(held)
        # The closed loop runs on the real clock: a loaded machine's loop lag must not refuse its requests.
        gate.wait_seconds = gate.refusal_seconds = 5.0
        return await closed_loop(gate, {"refused": [SINGLE_LENGTH], "other": [SINGLE_LENGTH]}, seconds=0.02)

    work = run(scenario)
    assert work["refused"] == pytest.approx(work["other"], abs=0.0011), work


def test_waiters_cancelled_together_leave_the_gate_consistent() -> None:
    """A waiter admitted and cancelled gives its ticket back; that must not admit another waiter whose task
    was cancelled in the same turn of the loop (its future is done before its handler runs)."""

    async def scenario() -> tuple[int, int, bool]:
        gate, _ = admission(target=0.001)  # one 1 ms request at a time
        held = await gate.enter(SINGLE_LENGTH)
        assert held is not None
        older = asyncio.ensure_future(gate.enter(SINGLE_LENGTH))
        newer = asyncio.ensure_future(gate.enter(SINGLE_LENGTH))
        await asyncio.sleep(0)  # both wait
        gate.leave(held)  # admits the newer; its task has not resumed yet
        older.cancel()
        newer.cancel()
        results = await asyncio.gather(older, newer, return_exceptions=True)
        assert all(isinstance(result, asyncio.CancelledError) for result in results), results
        again = await gate.enter(SINGLE_LENGTH)
        return gate.admitted, gate.waiting, again is not None

    assert run(scenario) == (1, 0, True)


def test_refused_newcomers_charge_the_newcomers_nothing() -> None:
    """Fifty batches on new connections, all refused, leave the newcomers' shared tag where it was: the
    next newcomers get their one share among the kept clients' (charged 500 ms, they would get nothing)."""

    async def scenario() -> dict[str, float]:
        gate, _ = admission(target=0.0015, wait=0.01, refusal=0.01, limit=1000)
        gate.cost_model.seconds_per_kib = 0.001 / 16
        kept = [f"kept-{n}" for n in range(4)]
        for name in kept:  # each has a tag of its own
            ticket = await gate.enter(SINGLE_LENGTH, name)
            assert ticket is not None
            gate.leave(ticket)
        held = await gate.enter(SINGLE_LENGTH, kept[0])
        assert held is not None
        refused = [asyncio.ensure_future(gate.enter(BATCH_LENGTH, ("refused", n))) for n in range(50)]
        assert await asyncio.gather(*refused) == [None] * 50
        gate.leave(held)
        # The closed loop runs on the real clock: a loaded machine's loop lag must not refuse its requests.
        gate.wait_seconds = gate.refusal_seconds = 5.0
        newcomers = [f"new-{n}" for n in range(4)]
        patterns = {name: [SINGLE_LENGTH] for name in kept + newcomers}
        return await closed_loop(gate, patterns, seconds=0.1, new_connections=newcomers)

    work = run(scenario)
    newcomers = sum(seconds for name, seconds in work.items() if name.startswith("new"))
    assert newcomers == pytest.approx(work["kept-0"], rel=0.2), work


def test_clients_that_open_a_connection_per_request_do_not_grow_the_state_without_bound() -> None:
    async def scenario() -> int:
        gate = fair_gate()
        for number in range(3 * TRACKED_CLIENTS):
            ticket = await gate.enter(SINGLE_LENGTH, ("10.0.0.1", number))
            assert ticket is not None
            gate.leave(ticket)
        return len(gate._ends)

    assert run(scenario) <= TRACKED_CLIENTS


def test_the_refusal_is_a_prebuilt_structured_503_with_retry_after() -> None:
    first, second = shed_response(), shed_response()
    assert first.status_code == 503
    assert first.headers["retry-after"] == "1"
    assert first.headers["content-type"] == "application/json"
    assert b'"type":"overloaded"' in first.body
    first.headers["access-control-allow-origin"] = "*"  # as CORS middleware does, in place
    assert "access-control-allow-origin" not in second.headers


def test_bentoml_timeout_sits_just_above_the_service_deadlines() -> None:
    settings = ServiceSettings(admission_refusal_seconds=1.0, request_timeout_seconds=2.0)
    assert settings.server_timeout_seconds == pytest.approx(1.0 + 2.0 + SERVER_TIMEOUT_MARGIN_SECONDS)
