"""Fixtures of the release-loop tests: the fake Kubernetes API, and a REAL MLflow registry holding
v1 (production) and v2 (challenger, rejected by the offline gate)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from release.config import ReleaseSettings
from release.helm import Helm
from release.kube import connect
from release.loop import Cluster
from tests.support import REPO_ROOT, require_tool
from tests.unit.release.fake_helm import RecordingFakeHelm
from tests.unit.release.fake_kube import FakeKube
from training import registry
from training.config import TrainingSettings
from training.pipeline import train

NAMESPACE = "housing"


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
    installed: dict[str, Any] | None, lines: list[str], timeout: float = 30, **settings: Any
) -> tuple[Cluster, RecordingFakeHelm]:
    """A Cluster on the fake API whose Helm release holds ``installed`` as its user values."""
    helm_path = REPO_ROOT / ".tools" / "bin" / "helm"
    release_settings = ReleaseSettings(
        namespace=NAMESPACE,
        helm_binary=str(helm_path) if helm_path.is_file() else require_tool("helm"),
        timeout_seconds=timeout,
        poll_seconds=0.05,
        **settings,
    )
    helm = RecordingFakeHelm(Helm.from_settings(release_settings), installed)
    return Cluster(release_settings, helm, connect(release_settings), lines.append), helm


def play_deployments(fake: FakeKube, cluster: Cluster, helm: RecordingFakeHelm) -> None:
    """The fake Deployment controller: whatever the chart renders for the release's values is ready."""

    def on_change(_: dict[str, Any]) -> None:
        if not helm.revisions:
            return  # not installed yet
        objects = helm.template(cluster.release, cluster.settings.chart, helm.user_values(), [], {})
        prefix = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/"
        for stale in [path for path in fake.objects if path.startswith(prefix)]:
            del fake.objects[stale]
        for deployment in (obj for obj in objects if obj["kind"] == "Deployment"):
            replicas = deployment["spec"].get("replicas", 1)
            deployment["metadata"]["generation"] = 1
            deployment["status"] = {
                "observedGeneration": 1,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "availableReplicas": replicas,
            }
            fake.put(prefix + deployment["metadata"]["name"], deployment)

    helm.on_change = on_change
    on_change({})


def version_tags(settings: TrainingSettings, version: str) -> dict[str, str]:
    client = registry.connect(settings)
    return dict(registry.get_version(client, settings.model_name, version).tags)


def production(settings: TrainingSettings) -> str:
    found = registry.alias_version(registry.connect(settings), settings.model_name, registry.PRODUCTION)
    assert found is not None
    return str(found.version)
