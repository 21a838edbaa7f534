"""The test-only faults of tests/faults/sitecustomize.py take effect in real `bentoml serve` of a Bento."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import psutil
import pytest

from contracts.artifacts import GOLDEN_SET_FILE, GoldenSet
from tests.integration.service.conftest import MODEL_NAME, RegisteredModel, requests_counted
from tests.support import Server, server_home, service_env, start_server, stop_server, wait_ready, with_faults

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DELAY_SECONDS = 0.3
SHIFT = 1.0
CRASH_AFTER = 2


@pytest.fixture(scope="module")
def golden(bentoml_home: Path, bento_tag: str, registered_model: RegisteredModel) -> GoldenSet:
    """The golden set as imported into the BentoML model store by `tabula build`."""
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
    """Two servers of the Bento, started side by side: one with the per-call faults, one never ready."""
    logs = tmp_path_factory.mktemp("fault-logs")
    faults = {
        "faulty": {"raise_rate": "0.5", "delay_seconds": str(DELAY_SECONDS), "shift": str(SHIFT)},
        "unready": {"never_ready": "1", "crash_after": str(CRASH_AFTER)},
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
        # Not a prediction call: the golden-set check at start-up sees no per-call fault.
        wait_ready(started["faulty"])
        yield started


def workers(server: Server) -> set[int]:
    return {child.pid for child in psutil.Process(server.process.pid).children(recursive=True)}


def post(http: httpx.Client, row: dict[str, float]) -> tuple[int | str, float, httpx.Response | None]:
    """Status (or transport error), seconds to the answer, and the response."""
    started = time.perf_counter()
    try:
        response = http.post("/predict", json=row)
    except httpx.TransportError as error:
        return type(error).__name__, time.perf_counter() - started, None
    return response.status_code, time.perf_counter() - started, response


def prediction(outcome: tuple[int | str, float, httpx.Response | None]) -> float:
    response = outcome[2]
    assert response is not None, outcome
    return float(response.json()["prediction"])


def golden_rows(golden: GoldenSet) -> list[dict[str, float]]:
    return [dict(zip(golden.feature_names, row, strict=True)) for row in golden.rows]


def test_every_fault_takes_effect_in_the_served_bento(servers: dict[str, Server], golden: GoldenSet) -> None:
    faulty, unready = servers["faulty"], servers["unready"]
    rows = golden_rows(golden)
    with httpx.Client(base_url=faulty.base_url, timeout=5) as http:
        outcomes = [post(http, row) for row in rows[:4]]
    statuses = [status for status, _, _ in outcomes]
    # Raise rate 0.5: calls 2 and 4 raise, calls 1 and 3 answer.
    assert statuses == [200, 500, 200, 500], outcomes
    # Delay: every call took at least the injected sleep.
    assert all(seconds >= DELAY_SECONDS for _, seconds, _ in outcomes), outcomes
    # Shift: answers are the golden predictions moved by SHIFT.
    answered = [prediction(outcomes[0]), prediction(outcomes[2])]
    assert answered == pytest.approx([golden.predictions[0] + SHIFT, golden.predictions[2] + SHIFT], abs=1e-9)

    # Never ready: alive and answering, but the golden set never passes.
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        assert httpx.get(f"{unready.base_url}/livez", timeout=2).status_code == 200
        assert httpx.get(f"{unready.base_url}/readyz", timeout=2).status_code == 503
        time.sleep(0.3)
    assert '"golden_max_error": Infinity' in unready.log(), unready.log()[-3000:]
    first_workers = workers(unready)
    with httpx.Client(base_url=unready.base_url, timeout=5) as http:
        outcomes = [post(http, row) for row in rows[: CRASH_AFTER + 1]]
    assert [status for status, _, _ in outcomes[:CRASH_AFTER]] == [200] * CRASH_AFTER, outcomes
    unshifted = [prediction(outcome) for outcome in outcomes[:CRASH_AFTER]]
    assert unshifted == pytest.approx(golden.predictions[:CRASH_AFTER], abs=1e-9)
    # Crash: the call after CRASH_AFTER kills the worker without an answer; BentoML starts another.
    assert isinstance(outcomes[CRASH_AFTER][0], str), outcomes
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and first_workers <= workers(unready):
        time.sleep(0.2)
    assert not first_workers <= workers(unready), "the worker did not exit"


def test_unexpected_faults_are_a_structured_500_at_once_counted_and_logged_once(
    servers: dict[str, Server], golden: GoldenSet
) -> None:
    faulty = servers["faulty"]
    rows = golden_rows(golden)
    # Patient enough to see BentoML's 30 s traffic timeout, should the fault leave the request unanswered.
    with httpx.Client(base_url=faulty.base_url, timeout=35) as http:
        before = requests_counted(faulty.base_url)
        outcomes = [post(http, rows[index % len(rows)]) for index in range(10)]
        after = requests_counted(faulty.base_url)
    faulted = [(seconds, response) for status, seconds, response in outcomes if status == 500]
    print(f"\n[faults] 500 after {[round(seconds, 3) for seconds, _ in faulted]} s (delay {DELAY_SECONDS} s)")
    assert len(faulted) == 5, outcomes
    assert [status for status, _, _ in outcomes if status != 500] == [200] * 5, outcomes
    for seconds, response in faulted:
        assert seconds < DELAY_SECONDS + 1, outcomes
        assert response is not None
        assert response.json() == {
            "error": {"type": "internal_error", "message": response.json()["error"]["message"], "details": []}
        }
    assert after["/predict", "500"] - before["/predict", "500"] == 5
    assert after["/predict", "200"] - before["/predict", "200"] == 5

    log = faulty.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    errors = [line for line in lines if line["message"] == "unexpected error"]
    # One line per faulted response over the server's life (the previous test's included), nothing else.
    assert len(errors) == after["/predict", "500"], errors
    assert log.count("Traceback") == len(errors), log[-3000:]
    for line in errors:
        assert "RuntimeError: injected fault: prediction call" in line["exception"], line
        assert (line["model_name"], line["path"]) == (MODEL_NAME, "/predict"), line
        assert line["model_version"]
    assert "ASGI callable returned without starting response" not in log
