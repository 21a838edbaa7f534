"""Adaptive micro-batching: rows that arrive while a prediction runs are predicted together next.

No latency budget and no waiting: an idle service predicts a lone row at once, a busy one
predicts everything that queued up during the previous call in one vectorised call
(scikit-learn's per-call overhead dominates single rows). Batches up to ``inline_rows`` run on
the event loop in one call (the compiled predictor, see ``COMPILED_MAX_ROWS`` in service/model.py).
Larger ones run on the loop too when the model has a ``stepwise`` walk, a step at a time with the
loop's other work in between; else on the prediction thread (scikit-learn). On the thread, a batch
waits for the GIL after each tree's walk, and next to a busy loop each wait lasts up to Python's switch
interval: under a crowd of clients the batches starved (the README's reliability section has the
figures). Small requests are batched only up to ``inline_rows`` rows: with many requests admitted at
once, a batch just over it would go to the slower path, which cost single rows twice what the one
call does. Nothing is ever refused here; admission control is the caller's job.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np
import numpy.typing as npt

from service.compiled import Steps

Rows = npt.NDArray[np.float64]


class MicroBatcher:
    def __init__(
        self,
        predict: Callable[[Rows], Rows],
        executor: Executor,
        max_rows: int,
        inline_rows: int = 0,
        on_batch: Callable[[Rows], None] | None = None,
        stepwise: Callable[[Rows], Steps] | None = None,
    ) -> None:
        self._predict = predict
        self._stepwise = stepwise
        self._executor = executor
        self._max_rows = max_rows
        self._inline_rows = inline_rows
        self._on_batch = on_batch
        self._pending: deque[tuple[Rows, asyncio.Future[Rows]]] = deque()
        self._draining = False
        self.batches = 0

    async def predict(self, rows: Rows) -> Rows:
        """Predictions for ``rows`` (2-D, model column order), possibly computed with other requests' rows."""
        future: asyncio.Future[Rows] = asyncio.get_running_loop().create_future()
        self._pending.append((rows, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._take()
                if not batch:
                    continue
                stacked = batch[0][0] if len(batch) == 1 else np.concatenate([rows for rows, _ in batch])
                inline = stacked.shape[0] <= self._inline_rows
                try:
                    if inline:
                        # Cheaper than the hop to the prediction thread and back.
                        values = self._predict(stacked)
                    elif self._stepwise is not None:
                        values = await _in_steps(self._stepwise(stacked))
                    else:
                        values = await loop.run_in_executor(self._executor, self._predict, stacked)
                except Exception as error:  # noqa: BLE001 - handed to every waiting request
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                self.batches += 1
                start = 0
                for rows, future in batch:
                    end = start + rows.shape[0]
                    if not future.done():
                        future.set_result(values[start:end])
                    start = end
                if self._on_batch is not None:
                    self._on_batch(stacked)
                if inline and self._pending:
                    await asyncio.sleep(0)  # let the answered requests go out before the next batch
        finally:
            self._draining = False

    def _take(self) -> list[tuple[Rows, asyncio.Future[Rows]]]:
        """Queued requests up to ``max_rows`` rows (at least one), skipping those already timed out.

        Behind a small request, only up to ``inline_rows`` rows: the batch stays on the fast path.
        """
        batch: list[tuple[Rows, asyncio.Future[Rows]]] = []
        total = 0
        limit = self._max_rows
        while self._pending:
            rows, future = self._pending[0]
            if future.done():
                self._pending.popleft()
                continue
            if not batch and rows.shape[0] <= self._inline_rows:
                limit = self._inline_rows
            if batch and total + rows.shape[0] > limit:
                break
            self._pending.popleft()
            batch.append((rows, future))
            total += rows.shape[0]
        return batch


async def _in_steps(steps: Steps) -> Rows:
    """Take the steps of a stepwise prediction with one turn of the event loop between each two."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await asyncio.sleep(0)
