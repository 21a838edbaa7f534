"""Model versions in a real registry and store, `bentoml serve` of each, and measurements of the servers.

Shared by the monitoring and reliability suites. Model building reuses the service suite's helpers
(tests/integration/service/conftest.py); serving goes through the working tree's service with a
``model_tag``, as a Bento built by ``tabula build`` pins it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from contracts.artifacts import CONTRACT_FILE, FEATURE_STATS_FILE, GOLDEN_SET_FILE, GoldenSet
from load.config import DEFAULT_PAYLOADS_FILE
from tests.integration.service.conftest import (
    FEATURES,
    HGB_TRUSTED,
    PROJECT_ROOT,
    feature_statistics,
    housing_contract,
    housing_features,
)
from tests.support import (
    Server,
    server_home,
    service_env,
    start_server,
    stop_server,
    wait_ready,
)

# The chart's default model.name, so the rendered queries select these versions as they are.
MODEL_NAME = "housing-price"
PAYLOADS = DEFAULT_PAYLOADS_FILE  # the housing example's held-out rows
# Figures of every measured scenario land here as <scenario>.json and, merged, results.json.
RESULTS_DIR = Path(tempfile.gettempdir()) / "tabula-reliability"
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
    experiment_id = client.create_experiment("tabula", artifact_location=(root / "artifacts").as_uri())
    mlflow.set_tracking_uri(tracking_uri)
    versions: dict[str, str] = {}
    try:
        for role, shift in shifts.items():
            pipeline = make_pipeline(
                StandardScaler(), HistGradientBoostingRegressor(max_iter=40, random_state=0)
            )
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
                mlflow.log_artifact(str(feature_statistics(train).write(scratch / FEATURE_STATS_FILE)))
                mlflow.log_artifact(str(golden.write(scratch / GOLDEN_SET_FILE)))
                mlflow.log_artifact(str(housing_contract().write(scratch / CONTRACT_FILE)))
            versions[role] = str(info.registered_model_version)
    finally:
        mlflow.set_tracking_uri(None)
    bentoml_home = root / "bentoml"
    env = {**service_env(bentoml_home), "MLFLOW_TRACKING_URI": tracking_uri}
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_SCRIPT, MODEL_NAME, tracking_uri, *versions.values()],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    tags = result.stdout.split()
    assert len(tags) == len(versions), result.stdout
    return ModelVersions(tracking_uri, bentoml_home, versions, dict(zip(versions, tags, strict=True)))


def serve_model(model_tag: str, bentoml_home: Path, log_path: Path, **settings: str) -> Server:
    """`bentoml serve` of the working tree's service on ``model_tag``; returns once it answers /livez.

    Each server gets a BentoML home of its own (see ``server_home``).
    """
    env = service_env(server_home(bentoml_home, log_path), **settings)
    return start_server(["service.service:TabulaService", "--arg", f"model_tag={model_tag}"], env, log_path)


@contextmanager
def serving(model_tag: str, bentoml_home: Path, log_path: Path, **settings: str) -> Iterator[Server]:
    """A ready server for the block, stopped afterwards."""
    server = serve_model(model_tag, bentoml_home, log_path, **settings)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)


@contextmanager
def side_by_side(
    start: Callable[..., Server],
    tags: dict[str, str],
    bentoml_home: Path,
    log_dir: Path,
    settings: dict[str, dict[str, str]],
) -> Iterator[dict[str, Server]]:
    """``start`` (``serve_model`` or ``launch``) for every role at once, as each takes seconds to import;
    every server that started is stopped after the block, even when another failed to start."""
    with ThreadPoolExecutor(max_workers=len(tags)) as pool:
        futures = {
            role: pool.submit(start, tag, bentoml_home, log_dir / f"{role}.log", **settings.get(role, {}))
            for role, tag in tags.items()
        }
        started = {role: future.result() for role, future in futures.items() if future.exception() is None}
    try:
        failed = [future.exception() for future in futures.values() if future.exception() is not None]
        if failed:
            raise failed[0]  # type: ignore[misc]  # an exception instance
        yield started
    finally:
        for running in started.values():
            stop_server(running)


@contextmanager
def serving_all(
    tags: dict[str, str], bentoml_home: Path, log_dir: Path, settings: dict[str, dict[str, str]]
) -> Iterator[dict[str, Server]]:
    """Ready servers for every role (started side by side), stopped after."""
    with side_by_side(serve_model, tags, bentoml_home, log_dir, settings) as started:
        for running in started.values():
            wait_ready(running)
        yield started


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


@dataclass(frozen=True)
class Outcome:
    """One request of a load run: when it was sent (monotonic), its status or error, and its latency."""

    sent_at: float
    status: int | str
    seconds: float


async def _post(session: Any, url: str, body: bytes, outcomes: list[Outcome]) -> None:
    import aiohttp

    sent_at = time.monotonic()
    status: int | str
    try:
        async with session.post(url, data=body, headers={"content-type": "application/json"}) as response:
            await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as error:
        status = type(error).__name__
    outcomes.append(Outcome(sent_at, status, time.monotonic() - sent_at))


async def closed_loop(url: str, bodies: list[bytes], connections: int, seconds: float) -> list[Outcome]:
    """Each connection sends its next request when the previous one is answered."""
    import aiohttp

    outcomes: list[Outcome] = []
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:

        async def user(offset: int) -> None:
            index = offset
            while time.monotonic() < deadline:
                await _post(session, url, bodies[index % len(bodies)], outcomes)
                index += connections

        await asyncio.gather(*(user(i) for i in range(connections)))
    return outcomes


async def open_loop(url: str, bodies: list[bytes], rate: float, seconds: float) -> list[Outcome]:
    """Requests at a fixed arrival rate whatever the answers: a slow server gets them all the same."""
    import aiohttp

    outcomes: list[Outcome] = []
    tasks = []
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        start = time.monotonic()
        for index in range(int(rate * seconds)):
            delay = start + index / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body = bodies[index % len(bodies)]
            tasks.append(asyncio.create_task(_post(session, url, body, outcomes)))
        await asyncio.gather(*tasks)
    return outcomes


def batch_bodies(rows_per_batch: int) -> list[bytes]:
    """Request bodies of ``rows_per_batch`` held-out rows each, for /predict/batch."""
    rows = payload_rows()
    repeated = rows * (1 + rows_per_batch // len(rows))
    return [
        json.dumps({"rows": repeated[start : start + rows_per_batch]}).encode()
        for start in range(0, len(rows), max(1, len(rows) // 5))
    ]


VARIANT_SCRIPT = """
import shutil, sys
from pathlib import Path
import bentoml
from contracts.artifacts import GoldenSet
source_tag, target_tag, fault = sys.argv[1:]
source = bentoml.models.get(source_tag)
with bentoml.models.create(target_tag, metadata=dict(source.info.metadata)) as target:
    for item in Path(source.path).iterdir():
        if item.is_file() and item.name != "model.yaml":
            shutil.copy2(item, Path(target.path) / item.name)
    model_file = Path(target.path) / "model.skops"
    if fault == "missing-model":
        model_file.unlink()
    elif fault == "corrupt-model":
        model_file.write_bytes(b"not a skops archive" * 100)
    elif fault == "golden-set-failing":
        golden = GoldenSet.read(Path(target.path) / "golden_set.json")
        moved = golden.model_copy(update={"predictions": [p + 1.0 for p in golden.predictions]})
        moved.write(Path(target.path) / "golden_set.json")
    else:
        raise SystemExit(f"unknown fault {fault}")
print(target.tag)
"""


def faulty_model(source_tag: str, bentoml_home: Path, fault: str) -> str:
    """A copy of ``source_tag`` with one fault (missing-model, corrupt-model, golden-set-failing)."""
    target = f"{source_tag.split(':')[0]}:{fault}"
    result = subprocess.run(
        [sys.executable, "-c", VARIANT_SCRIPT, source_tag, target, fault],
        cwd=PROJECT_ROOT, env=service_env(bentoml_home), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.split()[-1]


def launch(model_tag: str, bentoml_home: Path, log_path: Path, **settings: str) -> Server:
    """`bentoml serve` for servers that may never become ready: returns once alive or exited."""
    env = service_env(server_home(bentoml_home, log_path), **settings)
    target = ["service.service:TabulaService", "--arg", f"model_tag={model_tag}"]
    return start_server(target, env, log_path, may_exit=True)
