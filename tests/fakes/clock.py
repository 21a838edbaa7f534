"""An accelerated clock shared by the fake Argo controller and the release loop under test.

One real second is ``scale`` clock seconds: a 2-minute pause lasts 2 real seconds at ``scale=60``.
Every rule still runs on the clock; only the wait is shorter.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime


class ScaledClock:
    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._wall = time.time()
        self._mono = time.monotonic()

    def now(self) -> float:
        return self._wall + (time.monotonic() - self._mono) * self.scale

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.scale)

    def iso(self, at: float | None = None) -> str:
        """RFC 3339 with seconds, the way Kubernetes writes times."""
        moment = self.now() if at is None else at
        return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ManualClock:
    """A clock that moves only when told (``sleep`` moves it too): for step-by-step tests of the fake."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.moment = start

    def now(self) -> float:
        return self.moment

    def sleep(self, seconds: float) -> None:
        self.moment += max(0.0, seconds)

    def advance(self, seconds: float) -> None:
        self.moment += seconds

    def iso(self, at: float | None = None) -> str:
        moment = self.now() if at is None else at
        return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


AnyClock = ScaledClock | ManualClock
