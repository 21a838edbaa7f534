"""A smoke run of the benchmark: every target starts, takes Locust traffic, and lands in the report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.service.conftest import PROJECT_ROOT, RegisteredModel, Server, service_env

pytestmark = [pytest.mark.integration, pytest.mark.load]


def test_bench_smoke_run_reports_every_target(
    served: Server, registered_model: RegisteredModel, bentoml_home: Path, tmp_path: Path
) -> None:
    output = tmp_path / "bench.md"
    env = {**service_env(bentoml_home), "MLFLOW_TRACKING_URI": registered_model.tracking_uri}
    result = subprocess.run(
        [
            sys.executable, "-m", "bench.compare", "--smoke", "--output", str(output),
            "--model-name", registered_model.name, "--service-url", served.base_url,
        ],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(output.with_suffix(".json").read_text())
    runs = {(r["target"], r["users"]): r for r in document["results"]}
    assert set(runs) == {(target, users) for target in ("service", "mlflow", "constant") for users in (1, 4)}
    for run in runs.values():
        assert run["requests"] > 0, run
        # Locust reports whole milliseconds: a sub-millisecond median reads 0.
        assert 0 <= run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"], run
    assert all(runs[("service", users)]["failures"] == 0 for users in (1, 4))
    assert document["in_process"]["single_row_p50_ms"] > 0
    assert document["in_process"]["batch_us_per_row"] > 0
    assert {goal["goal"] for goal in document["goals"]} >= {"service: zero errors", "4 users: p99 <= 100 ms"}
    table = output.read_text()
    print(table)  # the measured figures, visible with -s
    assert "| target | users | req/s |" in table
    assert table.count("| service |") == 2
    assert table.count("| mlflow |") == 2
    assert table.count("| constant |") == 2
