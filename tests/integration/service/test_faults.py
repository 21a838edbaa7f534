"""The test-only faults of tests/faults/sitecustomize.py take effect in real `bentoml serve` of a Bento."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.service.conftest import (
    RegisteredModel,
    Server,
    server_home,
    service_env,
    start_server,
    stop_server,
    wait_ready,
    with_faults,
)
from training.artifacts import GOLDEN_SET_FILE, GoldenSet

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DELAY_SECONDS = 0.3
SHIFT = 1.0
CRASH_AFTER = 4


@pytest.fixture(scope="module")
def golden(bentoml_home: Path, bento_tag: str, registered_model: RegisteredModel) -> GoldenSet:
    """The golden set as imported into the BentoML model store by `housing build`."""
    pattern = f"{registered_model.name}/v{registered_model.version}-*/{GOLDEN_SET_FILE}"
    matches = list((bentoml_home / "models").glob(pattern))
    assert len(matches) == 1, matches
    return GoldenSet.read(matches[0])


def serve_with_faults(bento_tag: str, bentoml_home: Path, log_path: Path, **faults: str) -> Server:
    env = with_faults(service_env(server_home(bentoml_home, log_path)), **faults)
    return start_server([bento_tag], env, log_path)


@pytest.fixture(scope="module")
def servers(
    bento_tag: str, bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """Two servers of the Bento, started side by side: one with every per-call fault, one never ready."""
    logs = tmp_path_factory.mktemp("fault-logs")
    faults = {
        "faulty": {
            "raise_rate": "0.5",
            "delay_seconds": str(DELAY_SECONDS),
            "shift": str(SHIFT),
            "crash_after": str(CRASH_AFTER),
        },
        "unready": {"never_ready": "1"},
    }
    with ThreadPoolExecutor(max_workers=len(faults)) as pool, ExitStack() as stack:
        futures = {
            name: pool.submit(serve_with_faults, bento_tag, bentoml_home, logs / f"{name}.log", **given)
            for name, given in faults.items()
        }
        started = {}
        for name, future in futures.items():
            server = future.result()
            stack.callback(stop_server, server)
            started[name] = server
        yield started


def workers(server: Server) -> set[int]:
    return {child.pid for child in psutil.Process(server.process.pid).children(recursive=True)}


def test_every_fault_takes_effect_in_the_served_bento(servers: dict[str, Server], golden: GoldenSet) -> None:
    faulty, unready = servers["faulty"], servers["unready"]
    # Not a prediction call: the golden-set check at start-up sees no per-call fault.
    wait_ready(faulty)
    rows = [dict(zip(golden.feature_names, row, strict=True)) for row in golden.rows]
    first_workers = workers(faulty)
    outcomes: list[tuple[int | str, float, float | None]] = []
    with httpx.Client(base_url=faulty.base_url, timeout=5) as http:
        for row in rows[: CRASH_AFTER + 1]:
            started = time.perf_counter()
            try:
                response = http.post("/predict", json=row)
                status: int | str = response.status_code
                prediction = response.json()["prediction"] if status == 200 else None
            except httpx.TransportError as error:
                status, prediction = type(error).__name__, None
            outcomes.append((status, time.perf_counter() - started, prediction))
    statuses = [status for status, _, _ in outcomes]
    # Raise rate 0.5: calls 2 and 4 raise, calls 1 and 3 answer.
    assert statuses[0] == statuses[2] == 200, outcomes
    assert statuses[1] != 200, outcomes
    assert statuses[3] != 200, outcomes
    # Delay: every answered call took at least the injected sleep.
    assert all(seconds >= DELAY_SECONDS for status, seconds, _ in outcomes if status == 200), outcomes
    # Shift: answers are the golden predictions moved by SHIFT.
    assert outcomes[0][2] == pytest.approx(golden.predictions[0] + SHIFT, abs=1e-9)
    assert outcomes[2][2] == pytest.approx(golden.predictions[2] + SHIFT, abs=1e-9)
    # Crash: the call after CRASH_AFTER kills the worker without an answer.
    assert isinstance(statuses[CRASH_AFTER], str), outcomes
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and first_workers <= workers(faulty):
        time.sleep(0.2)
    assert not first_workers <= workers(faulty), "the worker did not exit"

    # Never ready: alive and answering, but the golden set never passes.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert httpx.get(f"{unready.base_url}/livez", timeout=2).status_code == 200
        assert httpx.get(f"{unready.base_url}/readyz", timeout=2).status_code == 503
        time.sleep(0.3)
    assert '"golden_max_error": Infinity' in unready.log(), unready.log()[-3000:]
    answered = httpx.post(f"{unready.base_url}/predict", json=rows[0], timeout=5)
    assert answered.status_code == 200, answered.text
    assert answered.json()["prediction"] == pytest.approx(golden.predictions[0], abs=1e-9)
