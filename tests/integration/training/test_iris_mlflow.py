"""The second worked example: Iris classification trained, registered and gated on a real MLflow server."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from cli.main import app
from contracts.artifacts import GoldenSet
from contracts.model import ModelContract
from tests.support import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# The example's three classifier families, small enough to fit in a blink.
FAST_IRIS = {
    "logistic_regression": {"estimator": "sklearn.linear_model.LogisticRegression", "scale": True},
    "small_forest": {"estimator": "sklearn.ensemble.RandomForestClassifier", "params": {"n_estimators": 10}},
    "small_hgb": {
        "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
        "params": {"max_iter": 20, "max_leaf_nodes": 7},
    },
}
# Predicts the class shares whatever the flower: valid and servable, but far worse on log-loss.
GUESSER = {"guesser": {"estimator": "sklearn.dummy.DummyClassifier", "params": {"strategy": "prior"}}}


def iris_params(path: Path, candidates: dict[str, object]) -> Path:
    params = yaml.safe_load((REPO_ROOT / "examples" / "iris" / "params.yaml").read_text(encoding="utf-8"))
    params["candidates"] = candidates
    params["promotion"]["bootstrap_samples"] = 300
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


@pytest.fixture
def iris_env(mlflow_url: str, tmp_path: Path) -> dict[str, str | None]:
    # CliRunner's env is applied on top of os.environ: None unsets a variable (TABULA_DATA_PATH above all).
    unset: dict[str, str | None] = {key: None for key in os.environ if key.startswith("TABULA_")}
    return unset | {
        "MLFLOW_TRACKING_URI": mlflow_url,
        "TABULA_PARAMS_FILE": str(iris_params(tmp_path / "iris.yaml", FAST_IRIS)),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    }


def test_iris_trains_registers_gates_and_records_its_contract(
    iris_env: dict[str, str | None], mlflow_url: str, tmp_path: Path
) -> None:
    client = MlflowClient(mlflow_url)
    result = CliRunner().invoke(app, ["train", "--example", "iris", "--json"], env=iris_env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["example"], summary["task"], summary["metric"]) == ("iris", "classification", "log_loss")
    assert summary["decision"] == "first"
    assert summary["test_accuracy"] > 0.85
    assert set(summary["candidates"]) == set(FAST_IRIS)
    best = summary["candidates"][summary["best"]]
    assert best["val_log_loss"] == min(row["val_log_loss"] for row in summary["candidates"].values())

    # The registered model and experiment come from the example.
    production = client.get_model_version_by_alias("iris-species", "production")
    assert production.version == summary["version"] == "1"
    assert production.tags["promotion.decision"] == "first"
    run = client.get_run(production.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "iris"
    assert run.data.tags["task"] == "classification"
    assert {"val_log_loss", "test_log_loss", "test_accuracy", "test_f1_macro"} <= set(run.data.metrics)
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"contract.json", "feature_stats.json", "golden_set.json"} <= artifacts

    folder = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "run")))
    contract = ModelContract.read(folder / "contract.json")
    assert contract.task == "classification"
    assert contract.class_labels == ["setosa", "versicolor", "virginica"]
    assert contract.feature_names == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert contract.features[0].maximum == 50
    golden = GoldenSet.read(folder / "golden_set.json")
    assert golden.classes == contract.class_labels
    assert len(golden.labels) == len(golden.probabilities) == len(golden.rows) == 16
    assert all(abs(sum(row) - 1) < 1e-9 for row in golden.probabilities)

    # A model that only knows the class shares becomes challenger, never production.
    env = iris_env | {"TABULA_PARAMS_FILE": str(iris_params(tmp_path / "guess.yaml", GUESSER))}
    result = CliRunner().invoke(app, ["train", "--example", "iris"], env=env)
    assert result.exit_code == 0, result.output
    assert "not promoted" in result.output
    assert "test log-loss" in result.output
    assert client.get_model_version_by_alias("iris-species", "challenger").version == "2"
    assert client.get_model_version_by_alias("iris-species", "production").version == "1"
    rejected = client.get_model_version("iris-species", "2")
    assert rejected.tags["promotion.decision"] == "rejected"
    assert rejected.tags["promotion.metric"] == "log_loss"
    assert float(rejected.tags["promotion.diff"]) > 0
    assert float(rejected.tags["promotion.ci_low"]) > 0

    # `tabula promote` runs the same log-loss gate: refused with exit 5, production untouched.
    result = CliRunner().invoke(app, ["promote", "--example", "iris", "--version", "2"], env=env)
    assert result.exit_code == 5, result.output
    assert client.get_model_version_by_alias("iris-species", "production").version == "1"

    result = CliRunner().invoke(app, ["models", "--example", "iris", "--json"], env=env)
    assert result.exit_code == 0, result.output
    listed = {row["version"]: row for row in json.loads(result.stdout)}
    assert listed["1"]["aliases"] == ["production"]
    assert listed["1"]["metrics"]["test_log_loss"] < listed["2"]["metrics"]["test_log_loss"]


def test_iris_data_summary_counts_the_classes(iris_env: dict[str, str | None]) -> None:
    result = CliRunner().invoke(app, ["data", "--example", "iris", "--json"], env=iris_env)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["source"] == "sklearn.datasets.load_iris"
    assert summary["classes"] == {"setosa": 50, "versicolor": 50, "virginica": 50}
    assert summary["split"] == {"train": 90, "validation": 30, "test": 30}


def test_a_tabula_file_given_to_iris_says_where_it_came_from(
    iris_env: dict[str, str | None], small_data: Path
) -> None:
    result = CliRunner().invoke(app, ["data", "--example", "iris", "--data", str(small_data)], env=iris_env)
    assert result.exit_code == 3
    assert "of example 'iris'" in result.output
    assert "came from --data / TABULA_DATA_PATH" in result.output
