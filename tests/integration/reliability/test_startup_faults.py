"""A model that cannot be served never becomes ready, says why once, and does not spin in a crash loop.

Training-side faults are covered where training is tested, against a real MLflow server
(tests/integration/training/test_training_mlflow.py): MLflow down during training fails clearly and
leaves the registry untouched, and a deliberately worse candidate is never promoted.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.reliability.harness import (
    ModelVersions,
    faulty_model,
    launch,
    payload_rows,
    record_figures,
    stop_server,
)

pytestmark = [pytest.mark.load, pytest.mark.slow]

OBSERVE_SECONDS = 15
# Words the one log line about each fault must contain (case-insensitive).
FAULTS = {
    "missing-model": "model.skops",
    "corrupt-model": "model.skops",
    "golden-set-failing": "golden",
}
MODEL_FAULTS = {"missing-model", "corrupt-model"}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faulty_model_is_never_ready_and_does_not_crash_loop(
    model: ModelVersions, chart_settings: dict[str, str], log_dir: Path, fault: str
) -> None:
    tag = faulty_model(model.tags["stable"], model.bentoml_home, fault)
    server = launch(tag, model.bentoml_home, log_dir / f"{fault}.log", **chart_settings)
    readiness: dict[str, int] = {}
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + OBSERVE_SECONDS
        while time.monotonic() < deadline and server.process.poll() is None:
            try:
                status = str(httpx.get(f"{server.base_url}/readyz", timeout=2).status_code)
            except httpx.TransportError as error:
                status = type(error).__name__
            readiness[status] = readiness.get(status, 0) + 1
            with contextlib.suppress(psutil.NoSuchProcess):
                workers |= {p.pid for p in psutil.Process(server.process.pid).children(recursive=True)}
            time.sleep(0.25)
        exit_code = server.process.poll()
        predicted = httpx.post(f"{server.base_url}/predict", json=payload_rows()[0], timeout=5)
    finally:
        stop_server(server)
    log = server.log()
    mentions = [line for line in log.splitlines() if FAULTS[fault] in line.lower()]
    figures = {
        "observed_s": OBSERVE_SECONDS,
        "readyz": readiness,
        "exit_code": exit_code,
        "worker_processes_seen": len(workers),
        "log_lines": len(log.splitlines()),
        "log_lines_naming_the_fault": len(mentions),
        "first_line_naming_the_fault": mentions[0][:300] if mentions else None,
        "predict_status": predicted.status_code,
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
        assert predicted.status_code == 503, predicted.text
        assert predicted.json()["error"]["type"] == "model_unavailable"
    # Either the server exits (the kubelet then restarts it with back-off) or it stays up unready:
    # it never restarts its own worker in a loop.
    assert len(workers) <= 2, figures
