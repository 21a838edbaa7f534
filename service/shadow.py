"""Shadow release in the service: stable pods mirror a sample of their requests, a shadow pod compares.

Stable side (:class:`Mirror`): after a prediction request has been answered, a sampled copy of its body
goes on a bounded queue, with the champion's answer and the ``prediction_id`` in headers
(``MIRROR_HEADER``, ``CHAMPION_HEADER``, ``PREDICTION_ID_HEADER``). Sender threads post the copies to
the shadow Service. Nothing on this side waits for the shadow or can fail the live request: a full
queue, an unreachable, slow or failing shadow drops copies and counts them by reason. While the shadow
cannot be reached (no Service yet, no endpoints), copies are dropped at once for a growing back-off.
The sample rate and the target are re-read from a control file (a mounted ConfigMap, which the kubelet
updates in place), so starting or stopping a shadow never restarts the stable pods.

Shadow side (:class:`ShadowComparison`): a request carrying ``MIRROR_HEADER`` is answered as any other
(its answer goes back to the stable pod's sender, which throws it away), is never mirrored again, is
counted in the ``tabula_shadow_*`` series instead of the live ones, and its predictions are paired with
the champion's: numbers as absolute and relative differences, labels as agreements or swaps.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import Counter, Histogram

from service.config import ServiceSettings
from service.metrics import LATENCY_BUCKETS, METRIC_PREFIX, LabelledChildren

MIRROR_HEADER = "X-Tabula-Mirror"
CHAMPION_HEADER = "X-Tabula-Champion-Prediction"
PREDICTION_ID_HEADER = "X-Tabula-Prediction-Id"
# ASGI scopes carry lower-case header names as bytes.
MIRROR_HEADER_KEY = MIRROR_HEADER.lower().encode()

# Absolute differences in the target's unit (the housing target is in $100,000: 0.05 is $5,000).
ABS_DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# |shadow - champion| / |champion|.
REL_DIFFERENCE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)
# Relative differences of answers this close to zero would be noise, not a difference.
REL_DIFFERENCE_FLOOR = 1e-9


class DropReason:
    """Why a copy did not reach the shadow (``tabula_mirror_dropped_total{reason}``)."""

    queue_full = "queue_full"  # the senders are behind: the shadow is slower than the sampled traffic
    backoff = "backoff"  # the shadow was unreachable moments ago
    unreachable = "unreachable"  # no connection (no Service, no endpoints, refused)
    timeout = "timeout"  # connected, but no answer within the mirror timeout
    failed = "failed"  # any other transport error


@dataclass
class RequestMark:
    """Per-request state the prediction path shares with the mirror, without new arguments."""

    mirrored: bool = False
    prediction_id: str | None = None


REQUEST_MARK: ContextVar[RequestMark | None] = ContextVar("tabula_request_mark", default=None)


def is_mirrored(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether an ASGI request carries the mirror mark (any value but empty or ``0``)."""
    for name, value in headers:
        if name == MIRROR_HEADER_KEY:
            return value not in (b"", b"0")
    return False


def answers(result: Any) -> list[Any]:
    """The predictions of a response model, single or batch, whatever the task: numbers or labels."""
    many = getattr(result, "predictions", None)
    if many is not None:
        return list(many)
    return [result.prediction]


# --- stable side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MirrorControl:
    """Where copies go and how many: from the settings, overridden by the control file when it exists."""

    url: str | None
    sample_rate: float

    @classmethod
    def read(cls, path: Path, default: MirrorControl) -> MirrorControl:
        """The control file's ``url`` and ``sampleRate``; a missing or broken file leaves ``default``."""
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            rate = float(body.get("sampleRate", default.sample_rate))
            url = body.get("url", default.url) or None
        except (OSError, ValueError, TypeError, AttributeError):
            return default
        if not 0.0 <= rate <= 1.0:
            return default
        return cls(url=str(url) if url else None, sample_rate=rate)


@dataclass(frozen=True)
class MirrorCopy:
    url: str
    body: bytes
    headers: dict[str, str]


class MirrorMetrics:
    """``tabula_mirror_sent_total`` and ``tabula_mirror_dropped_total{reason}`` of one model."""

    def __init__(self, labels: dict[str, str], registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter

        model = list(labels)
        self._sent = Counter(
            f"{METRIC_PREFIX}mirror_sent_total",
            "Request copies the shadow answered (any status).",
            model,
            registry=registry,
        ).labels(**labels)
        self._dropped: Counter = Counter(
            f"{METRIC_PREFIX}mirror_dropped_total",
            "Request copies dropped before the shadow answered, by reason.",
            [*model, "reason"],
            registry=registry,
        )
        self._child = LabelledChildren(labels)

    def sent(self) -> None:
        self._sent.inc()

    def dropped(self, reason: str) -> None:
        self._child(self._dropped, reason=reason).inc()


@dataclass
class Backoff:
    """Growing pause after the shadow could not be reached; reset by the first answer."""

    first: float
    longest: float
    until: float = 0.0
    current: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def active(self, now: float) -> bool:
        return now < self.until

    def failed(self, now: float) -> None:
        with self.lock:
            if now < self.until:  # another sender already backed off for this outage
                return
            self.current = min(self.longest, self.current * 2 if self.current else self.first)
            self.until = now + self.current

    def succeeded(self) -> None:
        self.current = 0.0
        self.until = 0.0


class Mirror:
    """Copies sampled, answered requests to the shadow from background threads; never blocks, never raises."""

    def __init__(
        self,
        default: MirrorControl,
        control_file: Path | None,
        control_seconds: float,
        queue_size: int,
        senders: int,
        timeout_seconds: float,
        backoff: Backoff,
        metrics: MirrorMetrics,
        logger: logging.Logger,
    ) -> None:
        self._default = default
        self._control_file = control_file
        self._control_seconds = control_seconds
        self._control = default if control_file is None else MirrorControl.read(control_file, default)
        self._control_checked = time.monotonic()
        self._queue: queue.Queue[MirrorCopy | None] = queue.Queue(maxsize=queue_size)
        self._timeout = timeout_seconds
        self._backoff = backoff
        self._metrics = metrics
        self._logger = logger
        self._threads = [
            threading.Thread(target=self._send_loop, name=f"shadow-mirror-{index}", daemon=True)
            for index in range(senders)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def control(self) -> MirrorControl:
        return self._control

    def offer(self, path: str, body: bytes, result: Any, prediction_id: str | None) -> None:
        """Queue a copy of an answered request if it is sampled; drops are counted, nothing waits."""
        control = self._current_control()
        if control.url is None or control.sample_rate <= 0.0:
            return
        if control.sample_rate < 1.0 and random.random() >= control.sample_rate:  # noqa: S311 - sampling
            return
        if self._backoff.active(time.monotonic()):
            self._metrics.dropped(DropReason.backoff)
            return
        headers = {
            "content-type": "application/json",
            MIRROR_HEADER: "1",
            CHAMPION_HEADER: json.dumps(answers(result), separators=(",", ":")),
        }
        if prediction_id:
            headers[PREDICTION_ID_HEADER] = prediction_id
        try:
            self._queue.put_nowait(MirrorCopy(control.url.rstrip("/") + path, body, headers))
        except queue.Full:
            self._metrics.dropped(DropReason.queue_full)

    def close(self, timeout: float = 2.0) -> None:
        """Stop the senders; copies still queued are dropped (they are samples, not records)."""
        for _ in self._threads:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                break
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _current_control(self) -> MirrorControl:
        if self._control_file is None:
            return self._control
        now = time.monotonic()
        if now - self._control_checked >= self._control_seconds:
            self._control_checked = now
            control = MirrorControl.read(self._control_file, self._default)
            if control != self._control:
                self._logger.info(
                    "shadow mirror control changed",
                    extra={"shadow_url": control.url, "shadow_sample_rate": control.sample_rate},
                )
                if control.url != self._control.url:
                    # The backoff was earned by the previous shadow; a new one gets its copies at once.
                    self._backoff.succeeded()
                self._control = control
        return self._control

    def _send_loop(self) -> None:
        with httpx.Client(timeout=self._timeout) as client:
            while True:
                copy = self._queue.get()
                if copy is None:
                    return
                self._send(client, copy)

    def _send(self, client: httpx.Client, copy: MirrorCopy) -> None:
        if self._backoff.active(time.monotonic()):
            self._metrics.dropped(DropReason.backoff)
            return
        try:
            client.post(copy.url, content=copy.body, headers=copy.headers)
        except (httpx.ConnectError, httpx.ConnectTimeout):
            self._backoff.failed(time.monotonic())
            self._metrics.dropped(DropReason.unreachable)
        except httpx.TimeoutException:
            self._metrics.dropped(DropReason.timeout)
        except httpx.HTTPError:
            self._metrics.dropped(DropReason.failed)
        else:
            self._backoff.succeeded()
            self._metrics.sent()


# --- shadow side ---------------------------------------------------------------------------------


class ShadowMetrics:
    """The shadow's own series: its requests and latency, and its answers paired with the champion's."""

    def __init__(self, labels: dict[str, str], registry: CollectorRegistry | None) -> None:
        from prometheus_client import Counter, Histogram

        model = list(labels)
        self.child = LabelledChildren(labels)
        self.requests: Counter = Counter(
            f"{METRIC_PREFIX}shadow_requests_total",
            "Mirrored requests the shadow answered, by status (kept out of the live request series).",
            [*model, "route", "status_code"],
            registry=registry,
        )
        self.duration: Histogram = Histogram(
            f"{METRIC_PREFIX}shadow_request_duration_seconds",
            "Time the shadow took to answer a mirrored request.",
            [*model, "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.pairs: Counter = Counter(
            f"{METRIC_PREFIX}shadow_pairs_total",
            "Predictions of the shadow paired with the champion's answer to the same request.",
            model,
            registry=registry,
        )
        self.unpaired: Counter = Counter(
            f"{METRIC_PREFIX}shadow_unpaired_total",
            "Mirrored requests whose answers could not be paired with the champion's, by reason.",
            [*model, "reason"],
            registry=registry,
        )
        self.abs_difference: Histogram = Histogram(
            f"{METRIC_PREFIX}shadow_abs_difference",
            "|shadow - champion| of paired numeric predictions, in the target's unit.",
            model,
            buckets=ABS_DIFFERENCE_BUCKETS,
            registry=registry,
        )
        self.rel_difference: Histogram = Histogram(
            f"{METRIC_PREFIX}shadow_rel_difference",
            "|shadow - champion| / |champion| of paired numeric predictions.",
            model,
            buckets=REL_DIFFERENCE_BUCKETS,
            registry=registry,
        )
        self.disagreements: Counter = Counter(
            f"{METRIC_PREFIX}shadow_disagreements_total",
            "Paired class predictions where the shadow's label differs from the champion's.",
            [*model, "champion_class", "shadow_class"],
            registry=registry,
        )

    def observe_request(self, route: str, status_code: int, seconds: float) -> None:
        self.child(self.requests, route=route, status_code=str(status_code)).inc()
        self.child(self.duration, route=route).observe(seconds)


@dataclass(frozen=True)
class Pairing:
    """How one mirrored request's answers compared with the champion's."""

    pairs: int
    abs_differences: tuple[float, ...] = ()
    rel_differences: tuple[float, ...] = ()
    swaps: tuple[tuple[str, str], ...] = ()
    unpaired: str | None = None


def pair(champion: Sequence[Any], shadow: Sequence[Any]) -> Pairing:
    """Pair two answers row by row: numbers by difference, labels by (dis)agreement.

    The task is read from the values themselves, so regression and classification share this path.
    """
    if len(champion) != len(shadow):
        return Pairing(0, unpaired="count_mismatch")
    if all(_number(value) for value in (*champion, *shadow)):
        differences = tuple(abs(float(s) - float(c)) for c, s in zip(champion, shadow, strict=True))
        relative = tuple(
            difference / max(abs(float(c)), REL_DIFFERENCE_FLOOR)
            for difference, c in zip(differences, champion, strict=True)
        )
        return Pairing(len(shadow), abs_differences=differences, rel_differences=relative)
    if all(isinstance(value, str) for value in (*champion, *shadow)):
        swaps = tuple((c, s) for c, s in zip(champion, shadow, strict=True) if c != s)
        return Pairing(len(shadow), swaps=swaps)
    return Pairing(0, unpaired="type_mismatch")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class ShadowComparison:
    """Records, per mirrored request, the shadow's answers against the champion's from the headers."""

    def __init__(self, metrics: ShadowMetrics, logger: logging.Logger, log_pairs: bool) -> None:
        self.metrics = metrics
        self._logger = logger
        self._log_pairs = log_pairs

    def compare(self, headers: Callable[[str], str | None], result: Any) -> Pairing:
        raw = headers(CHAMPION_HEADER)
        prediction_id = headers(PREDICTION_ID_HEADER)
        shadow = answers(result)
        try:
            champion = json.loads(raw) if raw else None
        except ValueError:
            champion = None
        if not isinstance(champion, list):
            pairing = Pairing(0, unpaired="no_champion_answer")
        else:
            pairing = pair(champion, shadow)
        self._record(pairing)
        if self._log_pairs:
            self._logger.info(
                "shadow pair",
                extra={
                    "prediction_id": prediction_id,
                    "champion": champion,
                    "shadow": shadow,
                    "abs_differences": list(pairing.abs_differences) or None,
                    "swaps": [list(swap) for swap in pairing.swaps] or None,
                    "unpaired": pairing.unpaired,
                },
            )
        return pairing

    def _record(self, pairing: Pairing) -> None:
        metrics = self.metrics
        if pairing.unpaired is not None:
            metrics.child(metrics.unpaired, reason=pairing.unpaired).inc()
            return
        metrics.child(metrics.pairs).inc(pairing.pairs)
        if pairing.abs_differences:
            absolute, relative = metrics.child(metrics.abs_difference), metrics.child(metrics.rel_difference)
            for difference in pairing.abs_differences:
                absolute.observe(difference)
            for difference in pairing.rel_differences:
                relative.observe(difference)
        for champion_class, shadow_class in pairing.swaps:
            metrics.child(
                metrics.disagreements, champion_class=champion_class, shadow_class=shadow_class
            ).inc()


def mirror_from_settings(
    settings: ServiceSettings, labels: dict[str, str], logger: logging.Logger
) -> Mirror | None:
    """The worker's mirror, or None when neither a shadow URL nor a control file is configured."""
    if settings.shadow_url is None and settings.shadow_control_file is None:
        return None
    return Mirror(
        MirrorControl(settings.shadow_url, settings.shadow_sample_rate),
        settings.shadow_control_file,
        settings.shadow_control_seconds,
        settings.shadow_queue_size,
        settings.shadow_senders,
        settings.shadow_timeout_seconds,
        Backoff(settings.shadow_backoff_seconds, settings.shadow_backoff_max_seconds),
        MirrorMetrics(labels, registry=None),
        logger,
    )
