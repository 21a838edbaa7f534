"""The release loop without Argo Rollouts: a REAL MLflow registry, a REAL Prometheus running the chart's
analysis queries, the fake Kubernetes API (playing the Deployment controller on what the REAL
``helm template`` renders) and a recording fake of Helm's cluster-side commands.

Prometheus scrapes two tracks that publish the service's own metrics (``ServiceMetrics``) of the stable
and the candidate model version, with the target label ``housing_io_track`` the chart's ServiceMonitor
attaches (podTargetLabels: the native Deployments' ``housing.io/track``); a thread plays their traffic,
so a good candidate and one answering 10 % of its requests with 500 differ only where the analysis looks.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, start_http_server

from release.errors import ReleaseRejectedError
from release.loop import ReleaseRequest, release
from service.metrics import ServiceMetrics
from tests.integration.release.conftest import (
    NAMESPACE,
    cluster_with,
    play_deployments,
    production,
    version_tags,
)
from tests.support import free_port, prometheus_server
from tests.unit.release.fake_kube import FakeKube
from training.config import TrainingSettings

pytestmark = pytest.mark.integration

REPOSITORY = "localhost/housing-service"
NEW_IMAGE = f"{REPOSITORY}:2-bbb"
# The native pods' housing.io/track of the stable (v1) and candidate (v2) version, per strategy.
TRACKS = {"canary": {"1": "stable", "2": "canary"}, "blueGreen": {"1": "blue", "2": "green"}}
# Fast analysis: three measurements a second apart, no failure tolerated.
ANALYSIS = {"interval": "1s", "count": 3, "initialDelay": "3s", "failureLimit": 0, "window": "30s"}
PREDICTIONS = (0.7, 1.2, 1.8, 2.3, 2.9, 3.6, 4.2)


@dataclass
class Tracks:
    """The stable (v1) and candidate (v2) tracks' metrics, fed until ``stop`` is set."""

    model_name: str
    candidate_error_every: int = 0  # every n-th candidate request answers 500; 0 = never
    targets: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def play(self, metrics: dict[str, ServiceMetrics]) -> None:
        for tick in itertools.count(1):
            if self.stop.wait(0.01):
                return
            every = self.candidate_error_every
            for version, track in metrics.items():
                failing = version == "2" and every > 0 and tick % every == 0
                track.observe_request("/predict", 500 if failing else 200, 0.004)
                if not failing:
                    track.observe_predictions("/predict", [PREDICTIONS[tick % len(PREDICTIONS)]])


@pytest.fixture
def tracks(
    request: pytest.FixtureRequest, training: TrainingSettings, tmp_path: Path
) -> Iterator[tuple[Tracks, str]]:
    """Both tracks' exporters, their traffic, and a Prometheus scraping them as the ServiceMonitor does.

    Parametrize indirectly with n to make every n-th candidate request fail from the first one on;
    the test's ``strategy`` parameter (default canary) names the tracks.
    """
    callspec = getattr(request.node, "callspec", None)
    names = TRACKS[callspec.params.get("strategy", "canary") if callspec else "canary"]
    state = Tracks(training.model_name, candidate_error_every=getattr(request, "param", 0))
    metrics: dict[str, ServiceMetrics] = {}
    servers = []
    targets: dict[str, str] = {}
    for version in ("1", "2"):
        registry = CollectorRegistry()
        metrics[version] = ServiceMetrics(training.model_name, version, f"run-{version}", registry)
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=registry))
        state.targets.append(f"127.0.0.1:{port}")
        targets[version] = state.targets[-1]
    traffic = threading.Thread(target=state.play, args=(metrics,), daemon=True)
    traffic.start()
    scrape = {
        "job_name": "housing-metrics",  # the chart's metrics Service, as the ServiceMonitor names the job
        "static_configs": [
            {"targets": [target], "labels": {"namespace": NAMESPACE, "housing_io_track": names[version]}}
            for version, target in targets.items()
        ],
    }
    try:
        with prometheus_server(tmp_path / "prometheus", [scrape]) as url:
            wait_for_rates(url)
            yield state, url
    finally:
        state.stop.set()
        traffic.join(5)
        for http_server, thread in servers:
            http_server.shutdown()
            thread.join(5)


def wait_for_rates(prometheus: str) -> None:
    """Until Prometheus has scraped both tracks often enough to compute a rate."""
    promql = (
        'count(sum by (model_version) (rate(housing_http_requests_total{job="housing-metrics"}[30s])) > 0)'
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
        if [sample["value"][1] for sample in result["data"]["result"]] == ["2"]:
            return
        time.sleep(0.5)
    raise AssertionError("Prometheus never computed a request rate for both tracks")


def native_release(strategy: str, training: TrainingSettings) -> dict[str, Any]:
    return {
        "image": {"repository": REPOSITORY, "tag": "1-aaa"},
        "model": {"name": training.model_name, "version": "1"},
        "rollout": {"strategy": strategy, "provider": "native", "analysis": ANALYSIS},
    }


def request(strategy: str) -> ReleaseRequest:
    return ReleaseRequest(
        version=None,
        strategy=strategy,
        provider="native",
        image=NEW_IMAGE,
        git_sha=None,
        auto_promote=True,
        retry=False,
    )


def served_images(fake: FakeKube) -> dict[str, str]:
    return {
        path.rsplit("/", 1)[-1]: obj["spec"]["template"]["spec"]["containers"][0]["image"]
        for path, obj in fake.objects.items()
        if "/deployments/" in path
    }


@pytest.mark.parametrize("strategy", ["canary", "blueGreen"])
def test_good_candidate_passes_the_analysis_and_takes_all_traffic(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], strategy: str
) -> None:
    _, prometheus = tracks
    lines: list[str] = []
    target, helm = cluster_with(native_release(strategy, training), lines, prometheus_url=prometheus)
    play_deployments(fake, target, helm)

    assert release(target, training, request(strategy)) == "2"

    assert production(training) == "2"
    tags = version_tags(training, "2")
    assert tags["release.state"] == "promoted"
    assert tags["release.strategy"] == f"{strategy}/native"
    assert tags["release.result"].startswith("analysis passed: success-rate 0 failed")
    # Every measurement came from Prometheus, and none lacked data.
    measured = [line for line in lines if line.startswith("analysis ")]
    assert len(measured) == 9, lines
    assert all(line.endswith("-> ok") for line in measured), measured
    candidate, promotion = (call[1] for call in helm.calls)
    if strategy == "canary":
        assert candidate["rollout"]["native"]["canary"] == {"tag": "2-bbb", "modelVersion": "2"}
        assert promotion["image"]["tag"] == "2-bbb"
        assert promotion["rollout"]["native"]["canary"]["tag"] == ""
        assert served_images(fake) == {"housing": NEW_IMAGE}
    else:
        assert candidate["rollout"]["native"]["blueGreen"] == {"blueTag": "1-aaa", "greenTag": "2-bbb"}
        assert promotion["rollout"]["native"]["blueGreen"] == {"activeColor": "green"}
        # The old colour keeps running for a fast switch back; users are on green.
        assert served_images(fake) == {"housing-blue": f"{REPOSITORY}:1-aaa", "housing-green": NEW_IMAGE}


@pytest.mark.parametrize("tracks", [10], indirect=True, ids=["10%-errors"])
def test_erroring_canary_fails_the_analysis_and_is_rolled_back(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str]
) -> None:
    _, prometheus = tracks
    lines: list[str] = []
    target, helm = cluster_with(native_release("canary", training), lines, prometheus_url=prometheus)
    play_deployments(fake, target, helm)

    with pytest.raises(ReleaseRejectedError, match=r"v2 was rejected and rolled back: metric 'success-rate'"):
        release(target, training, request("canary"))

    assert production(training) == "1"
    tags = version_tags(training, "2")
    assert tags["release.state"] == "rejected"
    assert "success-rate" in tags["release.reason"]
    assert [call[0] for call in helm.calls] == ["upgrade", "rollback"]
    assert helm.calls[1] == ("rollback", 1)
    assert helm.user_values() == native_release("canary", training)
    assert served_images(fake) == {"housing": f"{REPOSITORY}:1-aaa"}
    assert "production stays at v1" in lines
