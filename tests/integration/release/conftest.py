"""Fixtures of the release-loop tests: the fake Kubernetes API, a REAL MLflow registry holding
v1 (production) and v2 (challenger, rejected by the offline gate), and a REAL Prometheus scraping
exporters of the service's own metrics for both versions."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, start_http_server

from release import chart
from release.cluster import Cluster
from release.config import ReleaseSettings
from release.helm import Helm
from release.kube import Clock, connect
from service.metrics import ServiceMetrics
from tests.fakes.clock import AnyClock, ScaledClock
from tests.fakes.cluster import serve_chart
from tests.support import REPO_ROOT, free_port, prometheus_server, require_tool
from tests.unit.release.fake_helm import RecordingFakeHelm
from tests.unit.release.fake_kube import FakeKube
from training import registry
from training.config import TrainingSettings
from training.pipeline import train

NAMESPACE = "tabula"


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    server = FakeKube()
    server.start()
    monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    server.serve_group(
        "argoproj.io/v1alpha1", {"Rollout": "rollouts", "AnalysisTemplate": "analysistemplates"}
    )
    server.serve_group(
        "monitoring.coreos.com/v1", {"ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def training(
    request: pytest.FixtureRequest, mlflow_url: str, small_data: Path, fast_params: Path
) -> TrainingSettings:
    """v1 (production, served by the cluster) and v2 (challenger, rejected by the offline gate)."""
    settings = training_settings(request, mlflow_url, small_data, fast_params, ["tiny_hgb"])
    assert settings.tracking_uri == mlflow_url
    assert train(settings).decision.outcome == "first"
    second = train(settings.model_copy(update={"candidates": ["linear"]}))
    assert (second.version, second.decision.outcome) == ("2", "rejected")
    return settings


def training_settings(
    request: pytest.FixtureRequest, mlflow_url: str, data: Path, params: Path, candidates: list[str]
) -> TrainingSettings:
    """Settings for the session's shared MLflow server, with a model name distinct per test and parameter."""
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    name = f"release-{request.node.originalname.replace('_', '-')[:32]}-{digest}"
    return TrainingSettings(
        MLFLOW_TRACKING_URI=mlflow_url,  # the field's env alias: the only name it accepts
        data_path=data,
        params_file=params,
        model_name=name,
        experiment=name,
        candidates=candidates,
    )


def cluster_with(
    installed: dict[str, Any] | None,
    lines: list[str],
    timeout: float = 30,
    clock: Clock | None = None,
    **settings: Any,
) -> tuple[Cluster, RecordingFakeHelm]:
    """A Cluster on the fake API whose Helm release holds ``installed`` as its user values.

    With a clock, timeout and poll interval are seconds of that clock.
    """
    helm_path = REPO_ROOT / ".tools" / "bin" / "helm"
    release_settings = ReleaseSettings(
        namespace=NAMESPACE,
        helm_binary=str(helm_path) if helm_path.is_file() else require_tool("helm"),
        timeout_seconds=timeout,
        poll_seconds=0.05 if clock is None else 3.0,
        **settings,
    )
    helm = RecordingFakeHelm(Helm.from_settings(release_settings), installed)
    cluster = Cluster(release_settings, helm, connect(release_settings), lines.append)
    if clock is not None:
        cluster.clock = clock
    return cluster, helm


def serve(fake: FakeKube, cluster: Cluster, helm: RecordingFakeHelm, clock: AnyClock | None = None) -> None:
    """Every Helm change lands in the fake API as the real chart renders it."""
    serve_chart(
        fake,
        helm,
        cluster.release,
        clock or ScaledClock(1.0),
        lambda user_values: helm.template(cluster.release, cluster.settings.chart, user_values, [], {}),
    )


def version_tags(settings: TrainingSettings, version: str) -> dict[str, str]:
    client = registry.connect(settings)
    return dict(registry.get_version(client, settings.model_name, version).tags)


def production(settings: TrainingSettings) -> str:
    found = registry.alias_version(registry.connect(settings), settings.model_name, registry.PRODUCTION)
    assert found is not None
    return str(found.version)


@dataclass
class Tracks:
    """Exporters of the service's own metrics (``ServiceMetrics``), one per model version, scraped by a
    REAL Prometheus through file-based discovery: a fake pod registers its exporter with the target
    labels the ServiceMonitor would give it (``rollouts_pod_template_hash`` / ``tabula_io_track``).

    A thread plays traffic: the stable version (v1) always; the candidate (v2) as ``candidate`` says:
    ``good``, ``errors`` (every 10th request answers 500) or ``none``.
    """

    model_name: str
    sd_file: Path
    candidate: str = "good"
    exporters: dict[str, str] = field(default_factory=dict)
    groups: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def register(self, labels: dict[str, str], version: str) -> None:
        with self.lock:
            group = {"targets": [self.exporters[version]], "labels": {"namespace": NAMESPACE} | labels}
            if group in self.groups:
                return
            self.groups.append(group)
            scratch = self.sd_file.with_suffix(".tmp")
            scratch.write_text(json.dumps(self.groups))
            scratch.replace(self.sd_file)  # atomically, so Prometheus never reads half a file

    def register_pod(self, pod_hash: str, image: str) -> None:
        """FakeArgo's on_replica_set: the ReplicaSet's pods serve the version in the image tag."""
        self.register({"rollouts_pod_template_hash": pod_hash}, chart.version_of_tag(image.rsplit(":", 1)[1]))

    def play(self, metrics: dict[str, ServiceMetrics]) -> None:
        for tick in itertools.count(1):
            if self.stop.wait(0.01):
                return
            for version, track in metrics.items():
                if version == "2" and self.candidate == "none":
                    continue
                failing = version == "2" and self.candidate == "errors" and tick % 10 == 0
                track.observe_request("/predict", 500 if failing else 200, 0.004)
                if not failing:
                    track.observe_predictions("/predict", [PREDICTIONS[tick % len(PREDICTIONS)]])


PREDICTIONS = (0.7, 1.2, 1.8, 2.3, 2.9, 3.6, 4.2)


@pytest.fixture
def tracks(
    request: pytest.FixtureRequest, training: TrainingSettings, tmp_path: Path
) -> Iterator[tuple[Tracks, str]]:
    """Both versions' exporters, their traffic, and a Prometheus discovering them; parametrize indirectly
    with the candidate's traffic (``good``, ``errors``, ``none``)."""
    state = Tracks(
        training.model_name, tmp_path / "targets.json", candidate=getattr(request, "param", "good")
    )
    state.sd_file.write_text("[]")
    metrics: dict[str, ServiceMetrics] = {}
    servers = []
    for version in ("1", "2"):
        registry_ = CollectorRegistry()
        metrics[version] = ServiceMetrics(training.model_name, version, f"run-{version}", registry_)
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=registry_))
        state.exporters[version] = f"127.0.0.1:{port}"
    traffic = threading.Thread(target=state.play, args=(metrics,), daemon=True)
    traffic.start()
    scrape = {
        "job_name": "tabula-metrics",  # the chart's metrics Service, as the ServiceMonitor names the job
        "file_sd_configs": [{"files": [str(state.sd_file)], "refresh_interval": "1s"}],
    }
    try:
        with prometheus_server(tmp_path / "prometheus", [scrape]) as url:
            yield state, url
    finally:
        state.stop.set()
        traffic.join(5)
        for http_server, thread in servers:
            http_server.shutdown()
            thread.join(5)


def wait_for_series(prometheus: str, selector: str, timeout: float = 30) -> None:
    """Until Prometheus has scraped ``selector`` often enough to compute a rate."""
    promql = f"sum(rate(tabula_http_requests_total{{{selector}}}[30s])) > 0"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5).json()
        if result["data"]["result"]:
            return
        time.sleep(0.25)
    raise AssertionError(f"Prometheus never computed a request rate of {selector}")
