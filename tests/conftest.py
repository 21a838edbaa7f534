"""Fixtures shared by every suite: the data set, a small sample of it, fast params, MLflow stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.support import mlflow_server, shared_data_path
from training.data import load_dataset

FAST_CANDIDATES = {
    "linear": {"estimator": "sklearn.linear_model.LinearRegression", "scale": True, "params": {}},
    "ridge": {"estimator": "sklearn.linear_model.Ridge", "scale": True, "params": {"alpha": 1.0}},
    "tiny_forest": {
        "estimator": "sklearn.ensemble.RandomForestRegressor",
        "params": {"n_estimators": 5, "max_depth": 6, "n_jobs": 1},
    },
    "tiny_hgb": {
        "estimator": "sklearn.ensemble.HistGradientBoostingRegressor",
        "params": {"max_iter": 30, "max_leaf_nodes": 15},
    },
}


def write_params(path: Path, candidates: dict[str, object] | None = None, **overrides: object) -> Path:
    params: dict[str, object] = {
        "split": {"test_size": 0.2, "test_seed": 42, "validation_size": 0.1, "seed": 42},
        "promotion": {"margin": 0.0, "bootstrap_samples": 200, "confidence": 0.95},
        "golden_set_rows": 8,
        "candidates": candidates or FAST_CANDIDATES,
    }
    params.update(overrides)
    path.write_text(yaml.safe_dump(params), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def data_path() -> Path:
    """The full California Housing file (raw StatLib layout)."""
    return shared_data_path()


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory, data_path: Path) -> Path:
    """3,000 seeded rows in the scikit-learn layout: enough to train a sensible model in a second."""
    from training.examples import load_example

    dataset = load_dataset(data_path, load_example("housing").spec.feature_names, "MedHouseVal")
    sample: pd.DataFrame = dataset.frame.sample(n=3000, random_state=7)
    path = tmp_path_factory.mktemp("data") / "housing-small.csv"
    sample.to_csv(path, index=False)
    return path


@pytest.fixture
def fast_params(tmp_path: Path) -> Path:
    return write_params(tmp_path / "params.yaml")


@pytest.fixture(scope="session")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real MLflow tracking server for the session (tests use distinct model names)."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as running:
        yield running.url
