"""A smoke run of the benchmark: the service, MLflow's scoring server and the constant endpoint start,
predict what the model predicts, take wrk and Locust traffic, and land in the report. The peers in
their own environments have tests/integration/load/test_peers.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.service.conftest import PROJECT_ROOT, RegisteredModel
from tests.support import Server, measuring_alone, require_tool, service_env

pytestmark = [pytest.mark.integration, pytest.mark.load]

TARGETS = ("service", "mlflow", "constant")


def test_bench_smoke_run_reports_every_target(
    served: Server, registered_model: RegisteredModel, bentoml_home: Path, tmp_path: Path, load_lock: Path
) -> None:
    require_tool("wrk")
    output = tmp_path / "bench.md"
    env = {**service_env(bentoml_home), "MLFLOW_TRACKING_URI": registered_model.tracking_uri}
    with measuring_alone(load_lock):
        result = subprocess.run(
            [
                sys.executable, "-m", "bench.compare", "--smoke", "--output", str(output),
                "--model-name", registered_model.name, "--service-url", served.base_url,
                "--targets", ",".join(TARGETS),
            ],
            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(output.with_suffix(".json").read_text())
    runs = {(r["target"], r["tool"], r["connections"]): r for r in document["results"]}
    assert set(runs) == {(t, tool, n) for t in TARGETS for tool in ("wrk", "locust") for n in (1, 4)}
    for run in runs.values():
        assert run["requests"] > 0, run
        # Locust reports whole milliseconds: a sub-millisecond median reads 0.
        assert 0 <= run["p50_ms"] <= run["p99_ms"], run
    # Every target answered every request of the smoke run with a 200.
    assert [run for run in runs.values() if run["failures"]] == []
    assert document["in_process"]["single_row_p50_ms"] > 0
    assert document["in_process"]["batch_us_per_row"] > 0
    goals = {goal["goal"] for goal in document["goals"]}
    assert {"service: zero errors", "4 connections: p99 <= 3x p50", "1 connection: p50 < 1 ms"} <= goals
    assert "4 connections: >= 20x the best peer (mlflow)" in goals
    table = output.read_text()
    print(table)  # the measured figures, visible with -s
    assert "| target | connections | tool | req/s |" in table
    for target in TARGETS:
        assert table.count(f"| {target} |") == 4, target
