"""Mirroring between real `bentoml serve` processes of the Bento: a champion, its shadow, and bad shadows.

The champion reads its mirror control file (as a stable pod reads its mounted ConfigMap) while it
runs: every phase below only rewrites that file, so the champion is never restarted. The same load
runs in each phase; the client's latency figures are printed (``-s``) and attached to the report
(``record_property``), so the cost of mirroring is a measured number, not an assertion on timings.
What is asserted: no live error in any phase, every copy either answered or dropped and counted, a
shadow slow by seconds never holding a live answer anywhere near as long, copies never mirrored again
and never in the shadow's live series.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    Server,
    free_port,
    server_home,
    service_env,
    start_server,
    stop_server,
    wait_ready,
    with_faults,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROW = {
    "MedInc": 3.5, "HouseAge": 20.0, "AveRooms": 5.0, "AveBedrms": 1.0,
    "Population": 1200.0, "AveOccup": 3.0, "Latitude": 34.0, "Longitude": -118.0,
}  # fmt: skip
CLIENTS = 4
REQUESTS_PER_CLIENT = 150
CONTROL_SECONDS = 0.2
SLOW_SECONDS = 3.0
MIRROR_TIMEOUT = 0.5
QUEUE_SIZE = 100
SENDERS = 4


def write_control(path: Path, url: str | None, rate: float) -> None:
    """Replace the control file at once, as the kubelet swaps a ConfigMap volume's files."""
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps({"url": url, "sampleRate": rate}), encoding="utf-8")
    scratch.replace(path)
    time.sleep(CONTROL_SECONDS * 3)


def metric(base_url: str, name: str, **labels: str) -> float:
    """Sum of the samples ``name`` matching ``labels`` on the server's /metrics (0 when none)."""
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{base_url}/metrics", timeout=60).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


@dataclass(frozen=True)
class Load:
    latencies: list[float]
    errors: int

    @property
    def requests(self) -> int:
        return len(self.latencies)

    def quantile(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q * 100) - 1]

    def line(self, phase: str) -> str:
        return (
            f"{phase}: {self.requests} requests, {self.errors} errors, "
            f"p50 {self.quantile(0.5) * 1000:.2f} ms, p99 {self.quantile(0.99) * 1000:.2f} ms"
        )


def run_load(base_url: str) -> Load:
    """``CLIENTS`` clients, each sending ``REQUESTS_PER_CLIENT`` single-row predictions one after another."""

    def client() -> tuple[list[float], int]:
        latencies, errors = [], 0
        with httpx.Client(base_url=base_url, timeout=30) as http:
            for _ in range(REQUESTS_PER_CLIENT):
                started = time.perf_counter()
                status = http.post("/predict", json=ROW).status_code
                latencies.append(time.perf_counter() - started)
                errors += status != 200
        return latencies, errors

    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda _: client(), range(CLIENTS)))
    return Load([t for latencies, _ in results for t in latencies], sum(errors for _, errors in results))


def eventually(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


@dataclass
class Servers:
    champion: Server
    shadow: Server
    slow: Server
    champion_control: Path
    shadow_control: Path


@pytest.fixture(scope="module")
def servers(
    bento_tag: str, bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    """The champion (mirroring off), an identical shadow, and a shadow slow by seconds."""
    root = tmp_path_factory.mktemp("shadow")
    champion_control, shadow_control = root / "champion-mirror.json", root / "shadow-mirror.json"
    for control in (champion_control, shadow_control):
        control.write_text(json.dumps({"url": None, "sampleRate": 0.0}), encoding="utf-8")

    def env(log: Path, control: Path | None, shadow_track: bool) -> dict[str, str]:
        settings = {
            "log_predictions": "false",
            "shadow_control_seconds": str(CONTROL_SECONDS),
            "shadow_track": str(shadow_track).lower(),
        }
        if control is not None:
            settings |= {
                "shadow_control_file": str(control),
                "shadow_timeout_seconds": str(MIRROR_TIMEOUT),
                # Small, so that the copies queued for the slow shadow drain within seconds.
                "shadow_queue_size": str(QUEUE_SIZE),
                "shadow_senders": str(SENDERS),
                "shadow_backoff_seconds": "0.5",
                "shadow_backoff_max_seconds": "2",
            }
        return service_env(server_home(bentoml_home, log), **settings)

    started: list[Server] = []
    try:
        for name, control, faults in (
            ("champion", champion_control, {}),
            ("shadow", shadow_control, {}),
            ("slow", None, {"delay_seconds": str(SLOW_SECONDS)}),
        ):
            log = root / f"{name}.log"
            environment = env(log, control, shadow_track=name != "champion")
            started.append(start_server([bento_tag], with_faults(environment, **faults), log))
        for server in started:
            wait_ready(server)
        yield Servers(*started, champion_control=champion_control, shadow_control=shadow_control)
    finally:
        for server in started:
            stop_server(server)


def test_mirroring_costs_the_live_path_a_measured_figure_and_a_copy_is_paired_and_never_loops(
    servers: Servers, record_property: Callable[[str, object], None]
) -> None:
    champion, shadow = servers.champion.base_url, servers.shadow.base_url
    # The shadow would mirror to itself if a copy's mark were ignored.
    write_control(servers.shadow_control, shadow, 1.0)
    run_load(champion)  # warm-up: connections, caches, the predictor's first calls

    write_control(servers.champion_control, shadow, 0.0)
    off = run_load(champion)
    assert off.errors == 0
    assert metric(champion, "tabula_mirror_sent_total") == 0
    assert metric(shadow, "tabula_shadow_requests_total") == 0

    write_control(servers.champion_control, shadow, 1.0)
    on = run_load(champion)
    assert on.errors == 0
    eventually(
        lambda: (
            metric(champion, "tabula_mirror_sent_total") + metric(champion, "tabula_mirror_dropped_total")
            == on.requests
        )
    )
    sent = metric(champion, "tabula_mirror_sent_total")
    # The shadow runs the same model on the same two cores as the champion and the clients: on a busy
    # machine it falls behind at times, and a full queue drops copies (counted). Most get through.
    assert sent >= 0.5 * on.requests
    assert metric(shadow, "tabula_shadow_requests_total", status_code="200") == sent
    assert metric(shadow, "tabula_shadow_pairs_total") == sent
    assert metric(shadow, "tabula_shadow_abs_difference_count") == sent
    assert metric(shadow, "tabula_shadow_abs_difference_sum") == 0.0  # the same model answers the same
    # Copies never loop and never count as the shadow's live traffic.
    assert metric(shadow, "tabula_mirror_sent_total") == 0
    assert metric(shadow, "tabula_mirror_dropped_total") == 0
    assert metric(shadow, "tabula_http_requests_total", route="/predict") == 0
    assert metric(shadow, "tabula_predictions_total") == 0
    assert metric(champion, "tabula_http_requests_total", route="/predict", status_code="200") == (
        3 * on.requests
    )
    for phase, load in (("mirroring 0%", off), ("mirroring 100%", on)):
        print(load.line(phase) + (f" ({sent:.0f} copies sent)" if load is on else ""))
        record_property(phase, load.line(phase))


def test_a_shadow_down_or_slow_by_seconds_leaves_the_live_answers_alone_and_drops_are_counted(
    servers: Servers, record_property: Callable[[str, object], None]
) -> None:
    champion, slow = servers.champion.base_url, servers.slow.base_url
    write_control(servers.champion_control, f"http://127.0.0.1:{free_port()}", 1.0)
    dropped_before = metric(champion, "tabula_mirror_dropped_total")
    sent_before = metric(champion, "tabula_mirror_sent_total")
    unreachable_before = metric(champion, "tabula_mirror_dropped_total", reason="unreachable")
    down = run_load(champion)
    assert down.errors == 0
    eventually(lambda: metric(champion, "tabula_mirror_dropped_total") - dropped_before == down.requests)
    unreachable = metric(champion, "tabula_mirror_dropped_total", reason="unreachable") - unreachable_before
    assert unreachable >= 1
    # Backed off: most copies are dropped without an attempt to connect.
    assert unreachable < down.requests / 10
    assert metric(champion, "tabula_mirror_sent_total") == sent_before

    write_control(servers.champion_control, slow, 1.0)
    dropped_before = metric(champion, "tabula_mirror_dropped_total")
    slowed = run_load(champion)
    assert slowed.errors == 0
    # A live answer waiting for the shadow would take SLOW_SECONDS; the worst one is far from it.
    assert max(slowed.latencies) < SLOW_SECONDS / 2, slowed.line("slow shadow")
    write_control(servers.champion_control, None, 0.0)
    eventually(
        lambda: metric(champion, "tabula_mirror_dropped_total") - dropped_before == slowed.requests,
        timeout=QUEUE_SIZE * MIRROR_TIMEOUT + 30,
    )
    assert metric(champion, "tabula_mirror_dropped_total", reason="queue_full") >= 1
    assert metric(champion, "tabula_mirror_dropped_total", reason="timeout") >= 1
    assert metric(champion, "tabula_mirror_sent_total") == sent_before
    # The slow shadow answered what reached it (503: slower than its own request timeout) in its
    # shadow series, never in its live ones.
    eventually(lambda: metric(slow, "tabula_shadow_requests_total") >= 1, timeout=SLOW_SECONDS * 3)
    assert metric(slow, "tabula_http_requests_total", route="/predict") == 0
    for phase, load in (("shadow down", down), ("shadow slow by 3 s", slowed)):
        print(load.line(phase))
        record_property(phase, load.line(phase))
