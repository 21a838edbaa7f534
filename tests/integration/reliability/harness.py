"""Model versions in a real registry and store, `bentoml serve` of each, and measurements of the servers.

Shared by the monitoring and reliability suites. Model building reuses the service suite's helpers
(tests/integration/service/conftest.py); serving goes through the working tree's service with a
``model_tag``, as a Bento built by ``housing build`` pins it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.integration.service.conftest import (
    FEATURES,
    HGB_TRUSTED,
    PROJECT_ROOT,
    Server,
    feature_statistics,
    housing_features,
    service_env,
    start_server,
    stop_server,
    write_artifact,
)
from training.artifacts import FEATURE_STATS_FILE, GOLDEN_SET_FILE, GoldenSet

# The chart's default model.name, so the rendered queries select these versions as they are.
MODEL_NAME = "housing-price"
PAYLOADS = PROJECT_ROOT / "load" / "payloads.json"
# Figures of every measured scenario land here as <scenario>.json and, merged, results.json.
RESULTS_DIR = Path(tempfile.gettempdir()) / "housing-reliability"
IMPORT_SCRIPT = """
import sys
from service.packaging import import_model, resolve
name, uri, *versions = sys.argv[1:]
for version in versions:
    print(import_model(resolve(name, version, uri), uri))
"""


@dataclass(frozen=True)
class ModelVersions:
    """Registered versions by role (e.g. stable, canary) and their tags in one BentoML model store."""

    tracking_uri: str
    bentoml_home: Path
    versions: dict[str, str]
    tags: dict[str, str]


def register_versions(root: Path, shifts: dict[str, float]) -> ModelVersions:
    """One registered version per role, fitted on the target plus that role's shift (in $100k).

    Roles with equal shifts get identical models (same seed, same rows) under different versions.
    Every version is then imported into a BentoML store by the service's own packaging code.
    """
    import mlflow
    from mlflow import MlflowClient
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tracking_uri = f"sqlite:///{root / 'mlflow.db'}"
    features, target = housing_features(1200, seed=7)
    train, test = features.iloc[:1000], features.iloc[1000:]
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment("housing", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_tracking_uri(tracking_uri)
    versions: dict[str, str] = {}
    try:
        for role, shift in shifts.items():
            pipeline = make_pipeline(StandardScaler(), HistGradientBoostingRegressor(max_iter=40, random_state=0))
            pipeline.fit(train, target.iloc[:1000] + shift)
            golden_rows = test.iloc[:10]
            golden = GoldenSet(
                feature_names=FEATURES,
                rows=golden_rows.to_numpy().tolist(),
                predictions=pipeline.predict(golden_rows).tolist(),
                tolerance=1e-9,
            )
            with mlflow.start_run(experiment_id=experiment_id, run_name=role):
                mlflow.log_metrics({"test_rmse": 0.6})
                info = mlflow.sklearn.log_model(
                    pipeline,
                    name="model",
                    serialization_format="skops",
                    skops_trusted_types=HGB_TRUSTED,
                    registered_model_name=MODEL_NAME,
                    pip_requirements=["scikit-learn", "skops"],
                )
                scratch = root / "scratch" / role
                scratch.mkdir(parents=True)
                mlflow.log_artifact(str(write_artifact(feature_statistics(train), scratch / FEATURE_STATS_FILE)))
                mlflow.log_artifact(str(write_artifact(golden, scratch / GOLDEN_SET_FILE)))
            versions[role] = str(info.registered_model_version)
    finally:
        mlflow.set_tracking_uri(None)
    bentoml_home = root / "bentoml"
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_SCRIPT, MODEL_NAME, tracking_uri, *versions.values()],
        cwd=PROJECT_ROOT, env={**service_env(bentoml_home), "MLFLOW_TRACKING_URI": tracking_uri}, capture_output=True, text=True, timeout=300,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    tags = result.stdout.split()
    assert len(tags) == len(versions), result.stdout
    return ModelVersions(tracking_uri, bentoml_home, versions, dict(zip(versions, tags, strict=True)))


def serve_model(model_tag: str, bentoml_home: Path, log_path: Path, **settings: str) -> Server:
    """`bentoml serve` of the working tree's service on ``model_tag``; returns once it answers /livez."""
    env = service_env(bentoml_home, **settings)
    return start_server(["service.service:HousingService", "--arg", f"model_tag={model_tag}"], env, log_path)


@contextmanager
def serving(model_tag: str, bentoml_home: Path, log_path: Path, **settings: str) -> Iterator[Server]:
    """A ready server for the block, stopped afterwards."""
    server = serve_model(model_tag, bentoml_home, log_path, **settings)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)


def wait_ready(server: Server, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
            return
        time.sleep(0.2)
    raise AssertionError(f"service never became ready:\n{server.log()[-4000:]}")


def process_tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def tree_pids(pid: int) -> set[int]:
    return {process.pid for process in process_tree(pid)}


def tree_rss(pid: int) -> int:
    """Resident memory of a server: its starter and every worker process, in bytes."""
    total = 0
    for process in process_tree(pid):
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def payload_rows() -> list[dict[str, float]]:
    """Held-out test rows shipped with the load test: in-distribution traffic."""
    rows: list[dict[str, float]] = json.loads(PAYLOADS.read_text(encoding="utf-8"))["rows"]
    return rows


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def record_figures(scenario: str, figures: dict[str, Any]) -> Path:
    """Print one scenario's figures and keep them in RESULTS_DIR, merged into results.json."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{scenario}.json"
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    merged = {
        item.stem: json.loads(item.read_text(encoding="utf-8"))
        for item in sorted(RESULTS_DIR.glob("*.json"))
        if item.name != "results.json"
    }
    (RESULTS_DIR / "results.json").write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    print(f"\n[{scenario}] {json.dumps(figures, sort_keys=True)}\n-> {path}")
    return path
