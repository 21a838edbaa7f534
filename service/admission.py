"""Admission control by cost: a worker admits as much work as it can finish within a target time.

Requests are not counted but costed: the estimated worker time of a request is
``seconds_per_request + seconds_per_kib * body KiB``, from its Content-Length, known before the
body is read (JSON bytes track rows closely; a single row is about 0.16 KiB, a 1,000-row batch
about 162 KiB). Both rates are fitted to the worker's own recent busy time: every window of busy
time (some request admitted) is one observation of ``busy = a * requests + b * KiB`` over the
requests finished in it, and exponentially weighted least squares keeps ``a`` and ``b`` current.
Busy time includes everything the worker did meanwhile (parsing, answering refused requests,
logging), so the estimate is the worker's real drain rate, as loaded as it is.

A request is admitted at once while the admitted work plus its own stays within
``target_seconds``, or when nothing is admitted (a request larger than the target still runs,
alone). Otherwise it waits, its body unread, until enough admitted work finishes. One that could
not be admitted within ``wait_seconds`` is refused, and its 503 is sent ``refusal_seconds`` after
it arrived. More than ``limit`` requests held (admitted, waiting or refused) are refused at once.

Why refusals are not sent at once: a closed-loop client that gets a 503 sends its next request at
once. Under a crowd of such clients the worker spends its time writing 503s (each costs almost half of
what a single-row prediction does: parsing, its ASGI task, the response write, its metrics) and goodput
collapses.
By Little's law the crowd's connections are either being served or waiting for a refusal, so the
refusal rate is (connections - capacity * accepted latency) / refusal delay: a parked request
costs a pending future, and every second it stays parked is one request fewer to refuse.
Refusal delays are spread a little (``REFUSAL_SPREAD``) so that a crowd refused together does not
return, and get refused again, in one wave.

Arrival is estimated: a handler starts when the event loop gets to it, which under a burst of new
connections or of refusals falling due is hundreds of milliseconds after the request arrived, while
the client's clock runs. :class:`LoopLag` measures how late a heartbeat timer fires; the refusal is
due ``refusal_seconds`` after ``now - lag``, so refused clients hear within their patience. The wait
for admission counts from there too: a request that sat in the loop's backlog has already queued, and
holding it the full wait again would put its answer past the latency the wait is meant to bound.

Which waiter goes next: clients share the worker by work, a connection being a client (start-time fair
queueing, after Goyal, Vin and Cheng 1996). A request's start tag is the later of the virtual clock and
where its client's last admitted work ended (that request's start tag plus its estimated cost); the
waiter with the earliest start tag goes next, and the clock moves to the start tag of each request
admitted. So a connection that sends 1,000-row batches and one that sends single rows get the same worker
time while both wait, a mixed client keeps its own mix, a client back from idle starts at the clock (it
cannot bank time it did not use), and a refused request charges its client nothing. Connections with no
tag of their own yet (a first request, or clients that open a connection per request) share one, charged
as their requests queue: else such a crowd would start every request at the clock, ahead of everyone
else, and starve the rest. Behind a proxy that pools its upstream connections, each pooled connection is
one client. Among equal start tags (the clock's own: clients back from idle or refused), newest first
(``lifo``): under overload the newest are served soonest and the oldest, which would be served late
anyway, are the ones refused; ``fifo`` serves them in arrival order. A waiter whose turn it is but that
does not fit keeps its turn against others no larger with no earlier start tag, until it fits or its wait
is over: a newer request of its own size included, else under ``lifo`` each new batch took the turn of the
one before it, and batches were refused more often than single rows (44 % of them against 33 % at 32x).
Compared with latency-gradient limiters (Envoy's adaptive concurrency, Netflix's Gradient2), which
infer queueing from the ratio of a minimum round-trip time to the sampled one, the worker here
measures its own work directly and computes the queueing time instead of inferring it.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from operator import itemgetter
from typing import Literal

from starlette.responses import Response

from service.errors import OverloadedError, error_response

# Starting rates, replaced by the fit within the first window of busy time; measured on the project's
# 2-core VM for the 620-tree HistGradientBoosting model: 0.3 ms per single row, 15 ms per 1,000 rows.
PRIOR_SECONDS_PER_REQUEST = 0.0003
PRIOR_SECONDS_PER_KIB = 0.00009
# Busy time per observation of the fit, and the weight each new observation gets: about a second of
# busy time dominates the fit, so it follows a change of traffic (single rows to batches) quickly.
WINDOW_SECONDS = 0.1
OBSERVATION_WEIGHT = 0.1
# Pull toward the starting rates, relative to the data: it only decides the direction the data
# cannot (only single rows seen: their fixed and per-KiB parts cannot be told apart).
RIDGE = 0.001
# Below this share of its largest value the fit's determinant says that KiB and requests moved together
# in the recent windows (1 - their squared uncentred correlation).
COLLINEAR = 0.02
KIB = 1024.0

# Stale entries the turn heap may hold (admitted from the blocked slot, refused, gone) beyond twice the
# waiters, before it is rebuilt.
STALE_TURNS = 64
# Clients whose last admitted work's end is kept. A client that opens a connection per request leaves one
# that nothing reads again; beyond this many, the ends the virtual clock has passed (they no longer count)
# are dropped, then, if that is not enough, all but the latest half: a client dropped while ahead of the
# clock starts at the clock, earlier by at most what it was last charged.
TRACKED_CLIENTS = 4096
# Refusal delays are spread by this share (uniformly, around the setting) so that a crowd refused at
# once does not come back, and is not refused again, in one synchronised wave.
REFUSAL_SPREAD = 0.2
# Loop-lag heartbeat: its period, how fast a measured lag is forgotten (per beat: half in about a quarter
# of a second), and the idle time after which it stops.
HEARTBEAT_SECONDS = 0.01
LAG_DECAY_PER_BEAT = 0.97
HEARTBEAT_IDLE_SECONDS = 1.0

QueueOrder = Literal["lifo", "fifo"]
# Serialised once: refusing must cost as little as possible, it is what an overloaded worker does most.
_SHED = error_response(OverloadedError("overloaded, retry after the Retry-After delay"))


def shed_response() -> Response:
    """The structured 503 of a refused request, from prebuilt bytes.

    A new object each time: middleware may edit a response's header list in place (Starlette's CORS does).
    """
    return Response(_SHED.body, status_code=_SHED.status_code, headers=dict(_SHED.headers))


@dataclass(frozen=True)
class Ticket:
    """An admitted request: its estimated cost in seconds and its body size in KiB."""

    cost: float
    kib: float


class CostModel:
    """Worker seconds per request and per KiB of body, fitted to windows of busy time."""

    def __init__(
        self,
        seconds_per_request: float = PRIOR_SECONDS_PER_REQUEST,
        seconds_per_kib: float = PRIOR_SECONDS_PER_KIB,
    ) -> None:
        self.prior = (seconds_per_request, seconds_per_kib)
        self.seconds_per_request = seconds_per_request
        self.seconds_per_kib = seconds_per_kib
        # Exponentially weighted sums of the normal equations: n = requests, k = KiB, t = busy seconds.
        self._nn = self._nk = self._kk = self._nt = self._kt = 0.0

    def estimate(self, kib: float) -> float:
        return self.seconds_per_request + self.seconds_per_kib * kib

    def observe(self, busy_seconds: float, requests: int, kib: float) -> None:
        """One window: ``requests`` requests, ``kib`` KiB in all, finished in ``busy_seconds`` busy."""
        keep = 1.0 - OBSERVATION_WEIGHT
        w = OBSERVATION_WEIGHT
        self._nn = keep * self._nn + w * requests * requests
        self._nk = keep * self._nk + w * requests * kib
        self._kk = keep * self._kk + w * kib * kib
        self._nt = keep * self._nt + w * requests * busy_seconds
        self._kt = keep * self._kt + w * kib * busy_seconds
        self.seconds_per_request, self.seconds_per_kib = self._solve()

    def _solve(self) -> tuple[float, float]:
        """Ridge least squares toward the prior; a rate the data drives negative is dropped to zero."""
        prior_a, prior_b = self.prior
        nn, kk = self._nn * (1 + RIDGE), self._kk * (1 + RIDGE)
        nt, kt = self._nt + RIDGE * self._nn * prior_a, self._kt + RIDGE * self._kk * prior_b
        determinant = nn * kk - self._nk * self._nk
        if determinant <= COLLINEAR * nn * kk:
            # Bodies proportional to requests (single rows only): the split between the two rates is
            # noise. Keep the per-KiB rate and fit the per-request rate to the rest; else noise in busy
            # time drove the per-KiB rate up to 60 times its value and the next batch looked huge.
            b = self.seconds_per_kib
            return (max(0.0, (self._nt - b * self._nk) / self._nn) if self._nn > 0 else prior_a), b
        a = (nt * kk - self._nk * kt) / determinant
        b = (nn * kt - self._nk * nt) / determinant
        if a < 0.0:
            return 0.0, kt / kk
        if b < 0.0:
            return nt / nn, 0.0
        return a, b


class LoopLag:
    """How late the event loop runs what is due: how long ago a request whose handler starts now arrived.

    A request's deadlines count from its arrival, but its handler starts only when the loop gets to it:
    when a crowd of new connections arrives at once, or a thousand refusals fall due together, that is
    hundreds of milliseconds later. A heartbeat timer measures the lag (how late it fires); the estimate
    is the larger of the recent lag (decaying) and how overdue the next beat is right now (the loop is
    in a long turn). It beats only while ``active()`` says there is work, and stops after a second idle.
    """

    def __init__(self, active: Callable[[], bool], period: float = HEARTBEAT_SECONDS) -> None:
        self._active = active
        self._period = period
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._recent = 0.0
        self._idle_beats = 0

    def delay(self, loop: asyncio.AbstractEventLoop, now: float) -> float:
        """Estimated seconds between the arrival of a request whose handler runs at ``now`` and ``now``."""
        if self._handle is None:
            self._due = now + self._period
            self._handle = loop.call_at(self._due, self._beat, loop)
            return 0.0
        return max(self._recent, now - self._due)

    def _beat(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        self._recent = max(now - self._due, self._recent * LAG_DECAY_PER_BEAT)
        self._idle_beats = 0 if self._active() else self._idle_beats + 1
        if self._idle_beats * self._period >= HEARTBEAT_IDLE_SECONDS:
            self._handle, self._recent, self._idle_beats = None, 0.0, 0
            return
        self._due = now + self._period
        self._handle = loop.call_at(self._due, self._beat, loop)


# States of a waiter; it sits in several queues at once and is dropped from each lazily.
_WAITING, _ADMITTED, _REFUSED, _GONE = range(4)


@dataclass(eq=False)
class _Waiter:
    admit_by: float
    refuse_at: float
    kib: float
    cost: float
    client: Hashable | None
    newcomer: bool
    start: float
    admitted: asyncio.Future[bool]
    state: int = _WAITING


class Admission:
    """Admission control of one worker's prediction requests (event loop only, no locks)."""

    def __init__(
        self,
        target_seconds: float,
        wait_seconds: float,
        refusal_seconds: float,
        limit: int,
        order: QueueOrder = "lifo",
        on_shed: Callable[[str], None] | None = None,
        cost_model: CostModel | None = None,
        clock: Callable[[], float] = time.perf_counter,
        refusal_spread: float = REFUSAL_SPREAD,
    ) -> None:
        self.target_seconds = target_seconds
        self.wait_seconds = wait_seconds
        self.refusal_seconds = max(refusal_seconds, wait_seconds)
        self.refusal_spread = refusal_spread
        self.limit = limit
        self.newest_first = order == "lifo"
        self.cost_model = cost_model or CostModel()
        self.lag = LoopLag(lambda: self.admitted + self.waiting > 0)
        self._on_shed = on_shed
        self._clock = clock
        self.admitted = 0
        self.admitted_cost = 0.0
        # Fair queueing, in estimated worker seconds: the virtual clock, and where each client's last
        # admitted work ends (its start tag plus its cost).
        self.virtual = 0.0
        self._ends: dict[Hashable, float] = {}
        self._newcomers = 0.0
        # Waiters in arrival order (they pass to the refused at ``admit_by``, oldest first), and by turn:
        # (start tag, arrival sequence negated for newest first, waiter).
        self._arrivals: deque[_Waiter] = deque()
        self._turns: list[tuple[float, int, _Waiter]] = []
        self._waiting = 0
        # Refused waiters by the time their 503 is due: (refuse_at, sequence, waiter).
        self._refused: list[tuple[float, int, _Waiter]] = []
        self._refused_held = 0
        self._sequence = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        # The waiter whose turn it was when it did not fit: it keeps it against others no larger with no
        # earlier start tag until it fits or is refused (else they would overtake a waiting batch for ever).
        self._blocked: _Waiter | None = None
        self._typical_kib = 0.0
        self._busy_since: float | None = None
        self._window_busy = 0.0
        self._window_requests = 0
        self._window_kib = 0.0

    @property
    def waiting(self) -> int:
        """Requests held without being admitted: waiting, or refused and not yet answered."""
        return self._waiting + self._refused_held

    async def enter(self, content_length: str | None, client: Hashable | None = None) -> Ticket | None:
        """A ticket once admitted (give it back with :meth:`leave`), or None when refused.

        ``client`` names the connection the request came on (the clients share the worker fairly); a
        request without one is a client of its own.
        """
        if self.admitted + self.waiting >= self.limit:
            self._shed("concurrency")
            return None
        kib = int(content_length) / KIB if content_length and content_length.isdigit() else self._typical_kib
        cost = self.cost_model.estimate(kib)
        newcomer = client is not None and client not in self._ends
        if newcomer:
            # Clients with no tag of their own share one, charged as they queue: else a crowd that opens a
            # connection per request would start every request at the clock, ahead of everyone else.
            start = max(self.virtual, self._newcomers)
            self._newcomers = start + cost
        else:
            start = self.virtual if client is None else max(self.virtual, self._ends[client])
        if not self._waiting and self._fits(cost):
            return self._admit(kib, cost, client, start)
        loop = asyncio.get_running_loop()
        now = loop.time()
        # Both deadlines count from the arrival, by the client's clock: time the request spent before its
        # handler started was already queueing.
        arrived = now - self.lag.delay(loop, now)
        admit_by = max(now, arrived + self.wait_seconds)
        spread = 1.0 + self.refusal_spread * (random.random() - 0.5)  # noqa: S311 - jitter, not secrets
        refuse_at = max(admit_by, arrived + self.refusal_seconds * spread)
        waiter = _Waiter(admit_by, refuse_at, kib, cost, client, newcomer, start, loop.create_future())
        self._queue(waiter)
        if self._timer is None or refuse_at < self._timer_at:
            self._arm(loop, refuse_at)
        self._dispatch(now)
        try:
            admitted = await waiter.admitted
        except asyncio.CancelledError:
            if waiter.admitted.done() and not waiter.admitted.cancelled() and waiter.admitted.result():
                self.leave(Ticket(cost, kib))
            elif waiter.state == _WAITING:
                self._unqueue(waiter, _GONE)
            elif waiter.state == _REFUSED:
                waiter.state = _GONE
                self._refused_held -= 1
            raise
        return Ticket(cost, kib) if admitted else None

    def leave(self, ticket: Ticket) -> None:
        """The admitted request is answered: its work is done, and it is one observation of the cost."""
        now = self._clock()
        self.admitted -= 1
        self.admitted_cost = max(0.0, self.admitted_cost - ticket.cost) if self.admitted else 0.0
        self._typical_kib += 0.05 * (ticket.kib - self._typical_kib)
        self._window_requests += 1
        self._window_kib += ticket.kib
        busy = self._window_busy
        if self._busy_since is not None:
            busy += now - self._busy_since
        if self.admitted == 0:
            self._window_busy, self._busy_since = busy, None
        if busy >= WINDOW_SECONDS:
            self.cost_model.observe(busy, self._window_requests, self._window_kib)
            self._window_busy, self._window_requests, self._window_kib = 0.0, 0, 0.0
            self._busy_since = now if self.admitted else None
        if self._waiting:
            self._dispatch(asyncio.get_running_loop().time())

    def _fits(self, cost: float) -> bool:
        return self.admitted == 0 or self.admitted_cost + cost <= self.target_seconds

    def _admit(self, kib: float, cost: float, client: Hashable | None, start: float) -> Ticket:
        if self.admitted == 0:
            self._busy_since = self._clock()
        self.admitted += 1
        self.admitted_cost += cost
        self.virtual = max(self.virtual, start)
        if client is not None:
            self._ends[client] = start + cost
            if len(self._ends) > TRACKED_CLIENTS:
                self._forget_clients()
        return Ticket(cost, kib)

    def _forget_clients(self) -> None:
        ahead = {client: end for client, end in self._ends.items() if end > self.virtual}
        if len(ahead) > TRACKED_CLIENTS // 2:
            ahead = dict(heapq.nlargest(TRACKED_CLIENTS // 2, ahead.items(), key=itemgetter(1)))
        self._ends = ahead

    def _queue(self, waiter: _Waiter) -> None:
        if len(self._turns) > 2 * self._waiting + STALE_TURNS:
            self._turns = [turn for turn in self._turns if turn[2].state == _WAITING]
            heapq.heapify(self._turns)
        self._sequence += 1
        heapq.heappush(
            self._turns, (waiter.start, -self._sequence if self.newest_first else self._sequence, waiter)
        )
        self._arrivals.append(waiter)
        self._waiting += 1

    def _unqueue(self, waiter: _Waiter, state: int) -> None:
        """The waiter stops waiting (admitted, refused or gone); the queues drop it when they reach it."""
        waiter.state = state
        self._waiting -= 1
        if waiter is self._blocked:
            self._blocked = None
        if waiter.newcomer and state != _ADMITTED:
            self._newcomers = max(self.virtual, self._newcomers - waiter.cost)

    def _turn(self) -> _Waiter | None:
        """The waiter to admit next, or None when none fits now.

        The earliest start tag goes first; one whose turn it is but that does not fit keeps its turn
        (``_blocked``) against others no larger with no earlier start tag, until it fits or its wait is over.
        """
        turns = self._turns
        while turns[0][2].state != _WAITING:
            heapq.heappop(turns)
        waiter = turns[0][2]
        blocked = self._blocked
        if blocked is not None and blocked.cost >= waiter.cost and blocked.start <= waiter.start:
            waiter = blocked
        if self._fits(waiter.cost):
            return waiter
        self._blocked = waiter
        return None

    def _dispatch(self, now: float) -> None:
        """Admit waiters by turn while they fit."""
        self._refuse_late(now)
        while self._waiting:
            waiter = self._turn()
            if waiter is None:
                return
            if waiter.admitted.done():  # cancelled with its task, whose handler has not run yet
                self._unqueue(waiter, _GONE)
                continue
            self._unqueue(waiter, _ADMITTED)
            self._admit(waiter.kib, waiter.cost, waiter.client, waiter.start)
            waiter.admitted.set_result(True)

    def _refuse_late(self, now: float) -> None:
        """Waiters past ``admit_by`` (the oldest) will not be admitted any more; their 503 waits."""
        arrivals = self._arrivals
        while arrivals and (arrivals[0].state != _WAITING or arrivals[0].admit_by <= now):
            late = arrivals.popleft()
            if late.state == _WAITING:
                self._unqueue(late, _REFUSED)
                self._refused_held += 1
                self._sequence += 1
                heapq.heappush(self._refused, (late.refuse_at, self._sequence, late))

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(when, self._refuse_due), when

    def _refuse_due(self) -> None:
        """Answer the refusals that are due with a 503, then re-arm for the next one."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._refuse_late(now)
        refused = self._refused
        while refused and refused[0][0] <= now:
            waiter = heapq.heappop(refused)[2]
            if waiter.state != _REFUSED:
                continue
            waiter.state = _GONE
            self._refused_held -= 1
            if not waiter.admitted.done():
                self._shed("queue_timeout")
                waiter.admitted.set_result(False)
        upcoming = [refused[0][0]] if refused else []
        oldest = next((w for w in self._arrivals if w.state == _WAITING), None)
        if oldest is not None:
            upcoming.append(oldest.refuse_at)
        if upcoming:
            self._arm(loop, min(upcoming))

    def _shed(self, reason: str) -> None:
        if self._on_shed is not None:
            self._on_shed(reason)
