"""Fixtures shared by every suite: the data set, a small sample of it, fast params, MLflow stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml

from contracts.data import load_dataset
from tests.postgres import Postgres, postgres_server
from tests.support import REPO_ROOT, mlflow_server, shared_data_path

# The suite a test belongs to follows from its folder (`-m unit` selects every test under tests/unit).
SUITE_OF_FOLDER = {"unit": "unit", "integration": "integration", "e2e": "e2e", "chart": "chart"}
# Session fixtures that train models or start servers, and the xdist group of the tests that use one
# (directly or through another fixture), first match wins: `--dist loadgroup` runs a group on one
# worker, so each is made once rather than once per worker.
SHARED_SESSION_FIXTURES = {
    "base_images": "e2e-images",  # tests/e2e/conftest.py: podman's store, tags and pod names are shared
    "registered_model": "service-model",  # bento_tag, served, ... build on it
    "iris_registered_model": "service-iris-model",  # tests/integration/service/test_iris_service.py
    "model": "reliability-model",  # tests/integration/reliability/conftest.py
}
# Not grouped: the session's MLflow server (mlflow_url). Its eight modules took 1,238 s one after another
# on one worker, the suite's longest chain; each worker that runs one now starts a server of its own
# (a few seconds of CPU each). The tests give their models distinct names either way.
# Other servers and images are module fixtures: an integration or e2e module stays on one worker.
MODULE_GROUPED_SUITES = {"integration", "e2e"}

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


def xdist_groups(items: list[pytest.Item]) -> dict[Path, str]:
    """Module -> group: a module joins the group of a shared session fixture any of its tests uses
    (its module fixtures then stay on that worker too); integration and e2e modules else form their own."""
    groups: dict[Path, str] = {}
    for fixture, group in SHARED_SESSION_FIXTURES.items():
        for item in items:
            if _uses_session_fixture(item, fixture):
                groups.setdefault(item.path, group)
    for item in items:
        parts = item.path.relative_to(REPO_ROOT).parts
        if len(parts) > 2 and SUITE_OF_FOLDER.get(parts[1]) in MODULE_GROUPED_SUITES:
            groups.setdefault(item.path, item.path.relative_to(REPO_ROOT).as_posix())
    return groups


def _uses_session_fixture(item: pytest.Item, name: str) -> bool:
    """Whether the fixture this test resolves ``name`` to is session-scoped (not a local namesake)."""
    definitions = getattr(item, "_fixtureinfo", None)
    found = definitions.name2fixturedefs.get(name, ()) if definitions is not None else ()
    return bool(found) and found[-1].scope == "session"


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    groups = xdist_groups(items)
    for item in items:
        parts = item.path.relative_to(REPO_ROOT).parts
        if len(parts) > 2 and (suite := SUITE_OF_FOLDER.get(parts[1])):
            item.add_marker(suite)
        if item.get_closest_marker("xdist_group") is None and item.path in groups:
            item.add_marker(pytest.mark.xdist_group(groups[item.path]))


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
def load_lock(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The file ``tests.support.measuring_alone`` locks: one per session, shared by its xdist workers
    (their temporary folders share a parent)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "load.lock"


@pytest.fixture(scope="session")
def data_path() -> Path:
    """The full California Housing file (raw StatLib layout)."""
    return shared_data_path()


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory, data_path: Path) -> Path:
    """3,000 seeded rows in the scikit-learn layout: enough to train a sensible model in a second."""
    from contracts.examples import load_example

    dataset = load_dataset(data_path, load_example("housing").spec.feature_names, "MedHouseVal")
    sample: pd.DataFrame = dataset.frame.sample(n=3000, random_state=7)
    path = tmp_path_factory.mktemp("data") / "tabula-small.csv"
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL server for the session (tests create their own databases in it).

    Tests that stop or slow it down restore it before they end. Under xdist each worker has its own.
    """
    with postgres_server() as running:
        yield running
