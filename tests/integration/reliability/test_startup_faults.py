"""A model that cannot be served never becomes ready, says why once, and does not spin in a crash loop.

Training-side faults are covered where training is tested, against a real MLflow server
(tests/integration/training/test_training_mlflow.py): MLflow down during training fails clearly and
leaves the registry untouched, and a deliberately worse candidate is never promoted.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import psutil
import pytest

from tests.integration.reliability.harness import (
    ModelVersions,
    faulty_model,
    launch,
    payload_rows,
    record_figures,
    side_by_side,
)
from tests.support import Server

pytestmark = [pytest.mark.load, pytest.mark.slow]

OBSERVE_SECONDS = 15
# Words the one log line about each fault must contain (case-insensitive).
FAULTS = {
    "missing-model": "model.skops",
    "corrupt-model": "model.skops",
    "golden-set-failing": "golden",
}
MODEL_FAULTS = {"missing-model", "corrupt-model"}


@dataclass
class Observed:
    """What one faulty server did during the observation window."""

    server: Server
    readiness: dict[str, int] = field(default_factory=dict)
    workers: set[int] = field(default_factory=set)
    exit_code: int | None = None
    predict_status: int = 0
    predict_body: str = ""


@pytest.fixture(scope="module")
def observed(
    model: ModelVersions, chart_settings: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Observed]]:
    """The three faulty servers, started together and watched through one shared window.

    Each is its own process tree on its own port, so watching them side by side tells the same as one
    at a time, in a third of the time.
    """
    tags = {fault: faulty_model(model.tags["stable"], model.bentoml_home, fault) for fault in FAULTS}
    log_dir = tmp_path_factory.mktemp("startup-faults")
    settings = dict.fromkeys(tags, chart_settings)
    with side_by_side(launch, tags, model.bentoml_home, log_dir, settings) as servers:
        watched = {fault: Observed(server) for fault, server in servers.items()}
        deadline = time.monotonic() + OBSERVE_SECONDS
        while time.monotonic() < deadline:
            running = [one for one in watched.values() if one.server.process.poll() is None]
            if not running:
                break
            for one in running:
                try:
                    status = str(httpx.get(f"{one.server.base_url}/readyz", timeout=2).status_code)
                except httpx.TransportError as error:
                    status = type(error).__name__
                one.readiness[status] = one.readiness.get(status, 0) + 1
                with contextlib.suppress(psutil.NoSuchProcess):
                    children = psutil.Process(one.server.process.pid).children(recursive=True)
                    one.workers |= {child.pid for child in children}
            time.sleep(0.25)
        for one in watched.values():
            one.exit_code = one.server.process.poll()
            predicted = httpx.post(f"{one.server.base_url}/predict", json=payload_rows()[0], timeout=5)
            one.predict_status, one.predict_body = predicted.status_code, predicted.text
        yield watched


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faulty_model_is_never_ready_and_does_not_crash_loop(
    observed: dict[str, Observed], fault: str
) -> None:
    one = observed[fault]
    server, readiness, workers = one.server, one.readiness, one.workers
    log = server.log()
    mentions = [line for line in log.splitlines() if FAULTS[fault] in line.lower()]
    figures = {
        "observed_s": OBSERVE_SECONDS,
        "readyz": readiness,
        "exit_code": one.exit_code,
        "worker_processes_seen": len(workers),
        "log_lines": len(log.splitlines()),
        "log_lines_naming_the_fault": len(mentions),
        "first_line_naming_the_fault": mentions[0][:300] if mentions else None,
        "predict_status": one.predict_status,
    }
    record_figures(f"startup_{fault}", figures)
    assert "200" not in readiness, figures
    assert mentions, f"no log line names the fault:\n{log[-3000:]}"
    # One structured line says why, instead of a traceback per restart of the worker.
    assert len(mentions) == 1, figures
    assert "Traceback" not in log, log[-3000:]
    assert json.loads(mentions[0])["ready"] is False, mentions[0]
    if fault in MODEL_FAULTS:
        # No model, so predictions get the structured 503 rather than a 500 or a dropped connection.
        assert one.predict_status == 503, one.predict_body
        assert json.loads(one.predict_body)["error"]["type"] == "model_unavailable"
    # Either the server exits (the kubelet then restarts it with back-off) or it stays up unready:
    # it never restarts its own worker in a loop.
    assert len(workers) <= 2, figures
