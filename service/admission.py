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
once. Under a crowd of such clients the worker spends its time writing 503s (each costs about half
what a single-row prediction does: parsing, middleware, the response write) and goodput collapses.
By Little's law the crowd's connections are either being served or waiting for a refusal, so the
refusal rate is (connections - capacity * accepted latency) / refusal delay: a parked request
costs a pending future, and every second it stays parked is one request fewer to refuse.
Waiters are admitted newest first (``lifo``): under overload the newest requests are served
quickly and the oldest, which would be served late anyway, are the ones refused; accepted latency
stays within ``wait_seconds`` plus the target. With ``fifo`` every admitted request first waits
behind all the others, about ``wait_seconds`` under overload.
Compared with latency-gradient limiters (Envoy's adaptive concurrency, Netflix's Gradient2), which
infer queueing from the ratio of a minimum round-trip time to the sampled one, the worker here
measures its own work directly and computes the queueing time instead of inferring it.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
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
KIB = 1024.0

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
        if determinant <= 0.0:
            return (nt / nn if nn > 0 else prior_a), prior_b
        a = (nt * kk - self._nk * kt) / determinant
        b = (nn * kt - self._nk * nt) / determinant
        if a < 0.0:
            return 0.0, kt / kk
        if b < 0.0:
            return nt / nn, 0.0
        return a, b


@dataclass
class _Waiter:
    admit_by: float
    refuse_at: float
    kib: float
    cost: float
    admitted: asyncio.Future[bool]


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
    ) -> None:
        self.target_seconds = target_seconds
        self.wait_seconds = wait_seconds
        self.refusal_seconds = max(refusal_seconds, wait_seconds)
        self.limit = limit
        self.newest_first = order == "lifo"
        self.cost_model = cost_model or CostModel()
        self._on_shed = on_shed
        self._clock = clock
        self.admitted = 0
        self.admitted_cost = 0.0
        # Both in arrival order: waiters that may still be admitted, and those refused, whose 503 is due
        # at ``refuse_at``. Waiters pass from the first to the second at ``admit_by``, oldest first.
        self._waiting: deque[_Waiter] = deque()
        self._refused: deque[_Waiter] = deque()
        self._timer: asyncio.TimerHandle | None = None
        # The waiter whose turn it was when it did not fit: it keeps it against smaller ones (see _dispatch).
        self._blocked: _Waiter | None = None
        self._typical_kib = 0.0
        self._busy_since: float | None = None
        self._window_busy = 0.0
        self._window_requests = 0
        self._window_kib = 0.0

    @property
    def waiting(self) -> int:
        """Requests held without being admitted: waiting, or refused and not yet answered."""
        return len(self._waiting) + len(self._refused)

    async def enter(self, content_length: str | None) -> Ticket | None:
        """A ticket once admitted (give it back with :meth:`leave`), or None when refused."""
        if self.admitted + self.waiting >= self.limit:
            self._shed("concurrency")
            return None
        kib = int(content_length) / KIB if content_length and content_length.isdigit() else self._typical_kib
        cost = self.cost_model.estimate(kib)
        if not self._waiting and self._fits(cost):
            return self._admit(kib, cost)
        loop = asyncio.get_running_loop()
        now = loop.time()
        waiter = _Waiter(now + self.wait_seconds, now + self.refusal_seconds, kib, cost, loop.create_future())
        self._waiting.append(waiter)
        if self._timer is None:
            self._timer = loop.call_at(waiter.refuse_at, self._refuse_due)
        self._dispatch()
        try:
            admitted = await waiter.admitted
        except asyncio.CancelledError:
            if waiter.admitted.done() and not waiter.admitted.cancelled() and waiter.admitted.result():
                self.leave(Ticket(cost, kib))
            if waiter in self._waiting:
                self._forget(waiter)
            elif waiter in self._refused:
                self._refused.remove(waiter)
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
            self._dispatch()

    def _fits(self, cost: float) -> bool:
        return self.admitted == 0 or self.admitted_cost + cost <= self.target_seconds

    def _admit(self, kib: float, cost: float) -> Ticket:
        if self.admitted == 0:
            self._busy_since = self._clock()
        self.admitted += 1
        self.admitted_cost += cost
        return Ticket(cost, kib)

    def _dispatch(self) -> None:
        """Admit waiters in queue order while they fit.

        One that does not fit keeps its turn against smaller ones until it fits or is refused: newer
        single rows would otherwise overtake a waiting batch for ever.
        """
        self._refuse_late(asyncio.get_running_loop().time())
        while self._waiting:
            waiter = self._waiting[-1] if self.newest_first else self._waiting[0]
            if self._blocked is not None and self._blocked.cost > waiter.cost:
                waiter = self._blocked
            if not waiter.admitted.done() and not self._fits(waiter.cost):
                self._blocked = waiter
                return
            self._forget(waiter)
            if not waiter.admitted.done():  # done: cancelled, its task removes nothing more
                self._admit(waiter.kib, waiter.cost)
                waiter.admitted.set_result(True)

    def _forget(self, waiter: _Waiter) -> None:
        if waiter is self._blocked:
            self._blocked = None
        if self._waiting[-1] is waiter:
            self._waiting.pop()
        elif self._waiting[0] is waiter:
            self._waiting.popleft()
        else:
            self._waiting.remove(waiter)

    def _refuse_late(self, now: float) -> None:
        """Waiters past ``admit_by`` (the oldest) will not be admitted any more; their 503 waits."""
        while self._waiting and self._waiting[0].admit_by <= now:
            late = self._waiting.popleft()
            if late is self._blocked:
                self._blocked = None
            self._refused.append(late)

    def _refuse_due(self) -> None:
        """Answer every refusal that is due with a 503, then re-arm for the next one."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        self._refuse_late(now)
        while self._refused and self._refused[0].refuse_at <= now:
            waiter = self._refused.popleft()
            if not waiter.admitted.done():
                self._shed("queue_timeout")
                waiter.admitted.set_result(False)
        upcoming = self._refused or self._waiting
        if upcoming:
            self._timer = loop.call_at(upcoming[0].refuse_at, self._refuse_due)

    def _shed(self, reason: str) -> None:
        if self._on_shed is not None:
            self._on_shed(reason)
