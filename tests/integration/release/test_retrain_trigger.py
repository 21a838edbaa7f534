"""``train --if-changed``: the champion's data digest from a REAL MLflow server and drift gauges from a
REAL Prometheus scraping an exporter on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from release.config import ReleaseSettings
from release.errors import ReleaseError
from release.retrain import should_train
from tests.support import free_port, prometheus_server
from training.config import TrainingSettings
from training.pipeline import train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def exporter() -> Iterator[tuple[str, Gauge]]:
    registry = CollectorRegistry()
    gauge = Gauge(
        "tabula_feature_drift_psi", "PSI", ["model_name", "model_version", "feature"], registry=registry
    )
    port = free_port()
    http_server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"127.0.0.1:{port}", gauge
    finally:
        http_server.shutdown()
        thread.join(5)


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory, exporter: tuple[str, Gauge]) -> Iterator[str]:
    scrape = {"job_name": "tabula", "static_configs": [{"targets": [exporter[0]]}]}
    with prometheus_server(tmp_path_factory.mktemp("prometheus"), [scrape]) as url:
        yield url


@pytest.fixture(scope="module")
def champion(mlflow_url: str, small_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainingSettings:
    from tests.conftest import write_params

    params = write_params(tmp_path_factory.mktemp("params") / "params.yaml")
    settings = TrainingSettings(
        MLFLOW_TRACKING_URI=mlflow_url,  # the field's env alias: the only name it accepts
        data_path=small_data,
        params_file=params,
        model_name="retrain-trigger",
        experiment="retrain-trigger",
        candidates=["linear"],
    )
    assert settings.tracking_uri == mlflow_url
    assert train(settings).decision.outcome == "first"
    return settings


def wait_for_value(prometheus: str, feature: str, value: float) -> None:
    query = f'tabula_feature_drift_psi{{model_name="retrain-trigger", feature="{feature}"}}'
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = httpx.get(f"{prometheus}/api/v1/query", params={"query": query}).json()["data"]["result"]
        if any(abs(float(sample["value"][1]) - value) < 1e-9 for sample in result):
            return
        time.sleep(0.5)
    raise TimeoutError(f"Prometheus never scraped {feature}={value}")


def test_no_champion_trains(champion: TrainingSettings) -> None:
    fresh = champion.model_copy(update={"model_name": "retrain-never-trained"})
    assert should_train(fresh, ReleaseSettings()) == (
        True,
        "retrain-never-trained has no production version yet",
    )


def test_same_data_without_prometheus_does_not_train(champion: TrainingSettings) -> None:
    needed, why = should_train(champion, ReleaseSettings(prometheus_url=None))
    assert not needed
    assert why.endswith("is champion v1's; drift not checked (TABULA_RELEASE_PROMETHEUS_URL is not set)")


def test_changed_data_trains_and_says_so(
    champion: TrainingSettings, small_data: Path, tmp_path: Path
) -> None:
    changed = tmp_path / "changed.csv"
    pd.read_csv(small_data).iloc[:-10].to_csv(changed, index=False)
    needed, why = should_train(champion.model_copy(update={"data_path": changed}), ReleaseSettings())
    assert needed
    assert why.startswith("data digest ")
    assert " differs from champion v1's " in why


def test_drift_over_the_threshold_trains_and_below_does_not(
    champion: TrainingSettings, prometheus: str, exporter: tuple[str, Gauge]
) -> None:
    _, gauge = exporter
    gauge.labels("retrain-trigger", "1", "MedInc").set(0.35)
    gauge.labels("retrain-trigger", "1", "HouseAge").set(0.02)
    gauge.labels("retrain-trigger", "9", "Latitude").set(0.9)  # another version's drift is not the champion's
    wait_for_value(prometheus, "MedInc", 0.35)
    settings = ReleaseSettings(prometheus_url=prometheus, drift_psi_threshold=0.2)
    assert should_train(champion, settings) == (True, "drift PSI over 0.2 for v1: MedInc=0.350")

    gauge.labels("retrain-trigger", "1", "MedInc").set(0.05)
    wait_for_value(prometheus, "MedInc", 0.05)
    needed, why = should_train(champion, settings)
    assert not needed
    assert why.endswith("drift below 0.2 (highest MedInc=0.050)")


def test_unreachable_prometheus_is_an_error(champion: TrainingSettings) -> None:
    settings = ReleaseSettings(prometheus_url=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ReleaseError, match=r"cannot query drift from Prometheus at http://127\.0\.0\.1:"):
        should_train(champion, settings)
