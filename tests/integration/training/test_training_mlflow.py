"""Training, registration and promotion end to end against a real ``mlflow server``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import FAST_CANDIDATES, write_params
from tests.support import mlflow_server, stop
from training.config import TrainingSettings
from training.errors import RegistryError
from training.pipeline import train

pytestmark = [pytest.mark.integration, pytest.mark.slow]
runner = CliRunner()


@pytest.fixture(autouse=True)
def fast_failing_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")


def tabula(*args: str, env: dict[str, str]) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env=env)
    if result.exit_code == 1 and result.exception is not None:
        raise result.exception
    return result.exit_code, result.output


def environment(url: str, model: str, data: Path, params: Path) -> dict[str, str]:
    return {
        "MLFLOW_TRACKING_URI": url,
        "TABULA_MODEL_NAME": model,
        "TABULA_EXPERIMENT": f"exp-{model}",
        "TABULA_DATA_PATH": str(data),
        "TABULA_PARAMS_FILE": str(params),
    }


def test_train_registers_and_promotes_then_gates_a_worse_model(
    mlflow_url: str, small_data: Path, tmp_path: Path
) -> None:
    env = environment(mlflow_url, "gate-model", small_data, write_params(tmp_path / "params.yaml"))
    client = MlflowClient(mlflow_url)

    code, output = tabula("train", env=env)
    assert code == 0, output
    assert "promoted to production" in output

    experiment = client.get_experiment_by_name("exp-gate-model")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.data.tags["candidate"] for run in runs) == sorted(FAST_CANDIDATES)
    for run in runs:
        expected = {"val_rmse", "test_rmse", "test_mae", "test_r2", "fit_seconds", "model_bytes"}
        assert expected <= set(run.data.metrics)
        assert run.data.tags["data_digest"]
        assert run.data.tags["git_sha"]
        assert run.inputs.dataset_inputs[0].dataset.digest == run.data.tags["data_digest"]
        artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert {"feature_stats.json", "golden_set.json", "contract.json"} <= artifacts

    version = client.get_model_version_by_alias("gate-model", "production")
    assert version.version == "1"
    assert client.get_model_version_by_alias("gate-model", "challenger").version == "1"
    assert version.tags["promotion.decision"] == "first"
    best_run = client.get_run(version.run_id)
    assert best_run.data.metrics["val_rmse"] == min(run.data.metrics["val_rmse"] for run in runs)

    # Identical data, parameters and code: no duplicate version.
    code, output = tabula("train", env=env)
    assert code == 0, output
    assert "identical to existing gate-model v1" in output
    assert len(client.search_model_versions("name = 'gate-model'")) == 1

    # A deliberately worse model becomes challenger but never production.
    worse = write_params(tmp_path / "worse.yaml", candidates={"linear": FAST_CANDIDATES["linear"]})
    code, output = tabula("train", "--params", str(worse), env=env)
    assert code == 0, output
    assert "not promoted" in output
    assert client.get_model_version_by_alias("gate-model", "challenger").version == "2"
    assert client.get_model_version_by_alias("gate-model", "production").version == "1"
    rejected = client.get_model_version("gate-model", "2")
    assert rejected.tags["promotion.decision"] == "rejected"
    assert rejected.tags["promotion.metric"] == "rmse"
    assert float(rejected.tags["promotion.diff"]) > 0
    assert float(rejected.tags["promotion.ci_low"]) > 0

    code, output = tabula("promote", "--version", "2", env=env)
    assert code == 5, output
    assert client.get_model_version_by_alias("gate-model", "production").version == "1"

    code, output = tabula("promote", "--version", "2", "--force", env=env)
    assert code == 0, output
    assert client.get_model_version_by_alias("gate-model", "production").version == "2"

    code, output = tabula("promote", "--rollback", env=env)
    assert code == 0, output
    assert "rolled back from v2 to v1" in output
    assert client.get_model_version_by_alias("gate-model", "production").version == "1"

    code, output = tabula("models", "--json", env=env)
    assert code == 0, output
    listed = {row["version"]: row for row in json.loads(output)}
    assert set(listed) == {"1", "2"}
    assert listed["1"]["aliases"] == ["production"]
    assert listed["2"]["aliases"] == ["challenger"]
    assert listed["2"]["decision"] == "rolled_back"
    assert listed["1"]["metrics"]["test_rmse"] < listed["2"]["metrics"]["test_rmse"]


def test_promote_argument_errors_are_one_line(mlflow_url: str, small_data: Path, tmp_path: Path) -> None:
    env = environment(mlflow_url, "args-model", small_data, write_params(tmp_path / "params.yaml"))
    code, output = tabula("promote", env=env)
    assert code == 2
    assert "exactly one of" in output
    code, output = tabula("promote", "--version", "7", env=env)
    assert code == 4
    assert "no version 7" in output or "could not" in output
    code, output = tabula("models", env=env)
    assert code == 4
    assert "no registered model named 'args-model'" in output


def test_unreachable_mlflow_fails_clearly(small_data: Path, tmp_path: Path) -> None:
    env = environment("http://127.0.0.1:9", "down-model", small_data, write_params(tmp_path / "params.yaml"))
    code, output = tabula("train", env=env)
    assert code == 4
    assert output.strip().splitlines()[-1].startswith("error: could not reach MLflow at http://127.0.0.1:9")
    assert "Traceback" not in output


def test_server_lost_mid_training_leaves_registry_untouched(small_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "mlflow"
    params = write_params(tmp_path / "params.yaml")
    with mlflow_server(root) as running:
        settings = TrainingSettings(
            MLFLOW_TRACKING_URI=running.url, data_path=small_data, params_file=params, model_name="lost-model"
        )
        train(settings.model_copy(update={"candidates": ["linear"]}))

        def stop_server(_: object) -> None:
            stop(running.process)

        with pytest.raises(RegistryError, match="could not"):
            train(settings, stop_server)

    with mlflow_server(root) as running:
        client = MlflowClient(running.url)
        versions = client.search_model_versions("name = 'lost-model'")
        assert [version.version for version in versions] == ["1"]
        assert client.get_model_version_by_alias("lost-model", "production").version == "1"
        assert client.get_model_version_by_alias("lost-model", "challenger").version == "1"
