"""Tiny registered MLflow models, Bentos built from them, and a real `bentoml serve` of a Bento.

A housing regressor logged by hand (``registered_model``) and an Iris classifier trained by
``tabula train --example iris`` (``iris_registered_model``). Everything is session-scoped: a Bento
is built once and served once per test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from contracts.artifacts import (
    CONTRACT_FILE,
    FEATURE_STATS_FILE,
    GOLDEN_SET_FILE,
    QUANTILES,
    FeatureStatistics,
    FeatureSummary,
    GoldenSet,
    Histogram,
)
from contracts.model import ModelContract
from tests.support import Server, server_home, service_env, start_server, stop_server, wait_ready

PROJECT_ROOT = Path(__file__).resolve().parents[3]
DATA_PATH = PROJECT_ROOT.parent / "shared" / "data" / "cal_housing.csv.gz"
FEATURES = ["MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude"]
MODEL_NAME = "housing-price-test"
HGB_TRUSTED = ["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]
# Runs the service CLI commands on a local Typer app, as the root `tabula` CLI does.
CLI = "import typer; from cli.service import register; app = typer.Typer(); register(app); app()"


def housing_features(rows: int, seed: int) -> tuple[pd.DataFrame, pd.Series]:
    raw = pd.read_csv(DATA_PATH).sample(n=rows, random_state=seed)
    features = pd.DataFrame(
        {
            "MedInc": raw["median_income"],
            "HouseAge": raw["housing_median_age"],
            "AveRooms": raw["total_rooms"] / raw["households"],
            "AveBedrms": raw["total_bedrooms"] / raw["households"],
            "Population": raw["population"],
            "AveOccup": raw["population"] / raw["households"],
            "Latitude": raw["latitude"],
            "Longitude": raw["longitude"],
        }
    ).astype("float64")
    return features.reset_index(drop=True), (raw["median_house_value"] / 1e5).reset_index(drop=True)


def feature_statistics(frame: pd.DataFrame, bins: int = 10) -> FeatureStatistics:
    summaries = []
    for name in FEATURES:
        values = frame[name].to_numpy()
        inner = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
        counts = np.bincount(np.searchsorted(inner, values, side="right"), minlength=len(inner) + 1)
        summaries.append(
            FeatureSummary(
                name=name,
                min=float(values.min()),
                max=float(values.max()),
                mean=float(values.mean()),
                std=float(values.std()),
                quantiles={str(q): float(np.quantile(values, q)) for q in QUANTILES},
                histogram=Histogram(
                    bin_edges=[-np.inf, *inner.tolist(), np.inf], proportions=(counts / counts.sum()).tolist()
                ),
            )
        )
    return FeatureStatistics(n_rows=len(frame), features=summaries, target="MedHouseVal")


def housing_contract() -> ModelContract:
    """The contract training derives for the housing example: its features, bounds and target."""
    from contracts.examples import load_example

    spec = load_example("housing").spec
    assert spec.feature_names == FEATURES
    return ModelContract(
        example=spec.name,
        task=spec.task,
        features=spec.features,
        target="MedHouseVal",
        description=spec.description,
    )


@dataclass(frozen=True)
class RegisteredModel:
    tracking_uri: str
    name: str
    version: str
    run_id: str
    test_rows: pd.DataFrame


@pytest.fixture(scope="session")
def registered_model(tmp_path_factory: pytest.TempPathFactory) -> RegisteredModel:
    """A small HistGradientBoosting pipeline registered in a sqlite MLflow store, alias production."""
    import mlflow
    from mlflow import MlflowClient
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    root = tmp_path_factory.mktemp("mlflow")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    features, target = housing_features(1200, seed=7)
    train, test = features.iloc[:1000], features.iloc[1000:]
    pipeline = make_pipeline(StandardScaler(), HistGradientBoostingRegressor(max_iter=40, random_state=0))
    pipeline.fit(train, target.iloc[:1000])
    golden_rows = test.iloc[:10]
    golden = GoldenSet(
        feature_names=FEATURES,
        rows=golden_rows.to_numpy().tolist(),
        predictions=pipeline.predict(golden_rows).tolist(),
        tolerance=1e-9,
    )
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("tabula-test", artifact_location=(root / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_metrics({"test_rmse": 0.61, "test_r2": 0.7})
        mlflow.set_tag("data_digest", "sha256:test")
        mlflow.sklearn.log_model(
            pipeline,
            name="model",
            serialization_format="skops",
            skops_trusted_types=HGB_TRUSTED,
            registered_model_name=MODEL_NAME,
            # Explicit requirements spare MLflow inferring them (it would run `uv export`).
            pip_requirements=["scikit-learn", "skops"],
        )
        scratch = root / "scratch"
        scratch.mkdir()
        mlflow.log_artifact(str(feature_statistics(train).write(scratch / FEATURE_STATS_FILE)))
        mlflow.log_artifact(str(golden.write(scratch / GOLDEN_SET_FILE)))
        mlflow.log_artifact(str(housing_contract().write(scratch / CONTRACT_FILE)))
    version = client.search_model_versions(f"name='{MODEL_NAME}'")[0].version
    client.set_registered_model_alias(MODEL_NAME, "production", version)
    mlflow.set_tracking_uri(None)
    return RegisteredModel(tracking_uri, MODEL_NAME, str(version), run.info.run_id, test)


IRIS_MODEL_NAME = "iris-species"
# One small candidate: the compiled classifier path is what the served Iris model then exercises.
IRIS_CANDIDATES = {
    "small_hgb": {
        "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
        "params": {"max_iter": 20, "max_leaf_nodes": 7},
    }
}


@dataclass(frozen=True)
class IrisModel:
    tracking_uri: str
    name: str
    version: str


@pytest.fixture(scope="session")
def iris_registered_model(tmp_path_factory: pytest.TempPathFactory) -> IrisModel:
    """`tabula train --example iris` into a sqlite MLflow store: version 1, alias production."""
    import yaml
    from typer.testing import CliRunner

    from cli.main import app

    root = tmp_path_factory.mktemp("mlflow-iris")
    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    params = yaml.safe_load((PROJECT_ROOT / "examples" / "iris" / "params.yaml").read_text(encoding="utf-8"))
    params["candidates"] = IRIS_CANDIDATES
    params["promotion"]["bootstrap_samples"] = 200
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(params), encoding="utf-8")
    # CliRunner applies env over os.environ: None unsets (TABULA_DATA_PATH would replace Iris's data).
    unset: dict[str, str | None] = {key: None for key in os.environ if key.startswith("TABULA_")}
    env = unset | {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "TABULA_PARAMS_FILE": str(params_file),
        "TABULA_ARTIFACT_ROOT": str(root / "artifacts"),
    }
    result = CliRunner().invoke(app, ["train", "--example", "iris", "--json"], env=env)
    assert result.exit_code == 0, result.output
    version = str(json.loads(result.stdout)["version"])
    return IrisModel(tracking_uri, IRIS_MODEL_NAME, version)


@pytest.fixture(scope="session")
def bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bentoml-home")


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI, *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session")
def bento_tag(registered_model: RegisteredModel, bentoml_home: Path) -> str:
    """`tabula build` of the production alias into a BentoML home under tmp."""
    env = {**service_env(bentoml_home), "MLFLOW_TRACKING_URI": registered_model.tracking_uri}
    result = run_cli(["build", "--model-name", registered_model.name], env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def prediction_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("predlog") / "predictions.db"


@pytest.fixture(scope="session")
def served(
    bento_tag: str, bentoml_home: Path, prediction_db: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """The built Bento under `bentoml serve` on a free loopback port, ready."""
    log_path = tmp_path_factory.mktemp("logs") / "served.log"
    env = service_env(
        server_home(bentoml_home, log_path),
        drift_update_seconds="0",
        input_log_sample_rate="1.0",
        prediction_log_db_url=f"sqlite:///{prediction_db}",
        prediction_log_flush_seconds="0.2",
    )
    server = start_server([bento_tag], env, log_path)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="session")
def broken_golden_model_tag(
    bento_tag: str, bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """A copy of the built model in the store whose golden predictions are off by 1.0."""
    script = f"""
import shutil, bentoml
from pathlib import Path
from contracts.artifacts import GoldenSet
source = bentoml.models.get("{MODEL_NAME}:latest")
with bentoml.models.create("{MODEL_NAME}:broken-golden", metadata=dict(source.info.metadata)) as target:
    for item in Path(source.path).iterdir():
        if item.is_file() and item.name != "model.yaml":
            shutil.copy2(item, Path(target.path) / item.name)
    golden = GoldenSet.read(Path(source.path) / "golden_set.json")
    shifted = golden.model_copy(update={{"predictions": [p + 1.0 for p in golden.predictions]}})
    shifted.write(Path(target.path) / "golden_set.json")
print(target.tag)
"""
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, env=service_env(bentoml_home),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


def requests_counted(base_url: str) -> Counter[tuple[str, str]]:
    """The server's tabula_http_requests_total by (route, status_code), from its /metrics."""
    counts: Counter[tuple[str, str]] = Counter()
    text = httpx.get(f"{base_url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "tabula_http_requests_total":
                counts[sample.labels["route"], sample.labels["status_code"]] += int(sample.value)
    return counts
