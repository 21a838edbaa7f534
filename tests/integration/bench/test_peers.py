"""The benchmark's peers, really installed and really served (bench/targets.py): MLServer with
mlserver-sklearn, a KServe ModelServer and a plain BentoML service, each in the virtual environment the
benchmark makes for it with uv, serving one exported scikit-learn model. Each must predict exactly what
the model predicts for the same rows, over its own protocol, and take a short wrk run without an error.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingRegressor

from bench.compare import check_predictions, run_wrk_target
from bench.targets import PEERS, WIRES, Context, child_env, export_model, peer_python, started
from tests.support import measuring_alone, require_tool

pytestmark = [pytest.mark.integration, pytest.mark.load]

ROWS = 40


@pytest.fixture(scope="module")
def model(small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path, pd.DataFrame]:
    """A small tree ensemble fitted on named columns, as the project's models are, exported for the peers."""
    sample = pd.read_csv(small_data)
    features = sample.drop(columns=["MedHouseVal"])
    estimator = HistGradientBoostingRegressor(max_iter=20, random_state=0).fit(
        features, sample["MedHouseVal"]
    )
    return estimator, export_model(estimator, tmp_path_factory.mktemp("peer-model")), features.head(ROWS)


@pytest.fixture(scope="module")
def uv_on_path() -> None:
    # The benchmark finds uv on PATH, or in the project's .tools/bin where `./run setup` puts it.
    if shutil.which("uv") is None:
        require_tool(str(Path(__file__).resolve().parents[3] / ".tools" / "bin" / "uv"))


def test_the_benchmark_knows_the_three_peers() -> None:
    assert set(PEERS) == {"mlserver", "kserve", "bentoml"}
    assert "parallel_workers 0" in WIRES["mlserver"].note


@pytest.mark.parametrize("name", ["mlserver", "kserve", "bentoml"])
def test_peer_serves_the_models_predictions_and_takes_wrk_load(
    name: str, model: tuple[Any, Path, pd.DataFrame], uv_on_path: None, tmp_path: Path, load_lock: Path
) -> None:
    wrk = require_tool("wrk")
    estimator, model_dir, rows = model
    wire = WIRES[name]
    context = Context(None, "peer", "1", model_dir, peer_python(wire))
    columns = list(rows.columns)
    lines = [wire.request_line(columns, row) for row in rows.to_dict(orient="records")]
    requests_file = tmp_path / "requests"
    requests_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    expected = [float(value) for value in estimator.predict(rows)]
    command, env = wire.command(context), child_env(wire.env(context))
    # A peer's start-up (its own interpreter importing its stack) and its wrk run load both CPUs.
    with (
        measuring_alone(load_lock),
        started(name, command, wire.health, tmp_path, env, cwd=wire.cwd) as target,
    ):
        check_predictions(target, wire, lines, expected)
        result = run_wrk_target(wrk, target, connections=2, seconds=2, requests_file=requests_file)
    assert result.requests > 0
    assert result.failures == 0, result
    assert 0 < result.p50_ms <= result.p99_ms
