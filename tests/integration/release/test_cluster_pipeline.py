"""``tabula pipeline --k8s`` end to end against a REAL MLflow server, the fake Kubernetes API and a
recording fake of Helm's cluster-side commands.

The fake Job controller runs what the chart's training Job runs (``tabula train``) in this process,
against the real registry. The image build and push are replaced by a recording FAKE
(``build_and_ship``): they need a registry or a kind cluster, and the images themselves are built and
run by tests/e2e and the kind workflow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from release import cluster_pipeline
from release.cluster import Cluster
from release.cluster_pipeline import ClusterPipelineOptions, run
from tests.integration.release.conftest import (
    NAMESPACE,
    cluster_with,
    production,
    serve,
    training_settings,
)
from tests.unit.release.fake_kube import FakeKube, Request, Response
from training.config import TrainingSettings
from training.pipeline import train

pytestmark = pytest.mark.integration

JOBS = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"
PODS = f"/api/v1/namespaces/{NAMESPACE}/pods"
REPOSITORY = "localhost/tabula-service"
ROLLING = ClusterPipelineOptions(strategy="rollingUpdate", provider="argo", git_sha=None)
NATIVE_CANARY = ClusterPipelineOptions(strategy="canary", provider="native", git_sha=None)


@pytest.fixture
def settings(
    request: pytest.FixtureRequest, mlflow_url: str, small_data: Path, fast_params: Path
) -> TrainingSettings:
    return training_settings(request, mlflow_url, small_data, fast_params, ["linear"])


def run_jobs_in_process(fake: FakeKube, job_settings: Callable[[], TrainingSettings]) -> None:
    """The fake Job controller: a started Job trains in this process, then its pod and status say done."""

    def on_create(request: Request) -> Response | None:
        # `train --k8s` creates the Job suspended and starts it once its ConfigMaps exist; a suspended
        # Job runs no pod (Kubernetes docs, concepts/workloads/controllers/job "Suspending a Job").
        if request.method == "POST" and request.path == JOBS:
            assert request.body["spec"]["suspend"] is True
            return 201, fake.put(f"{JOBS}/{request.body['metadata']['name']}", request.body)
        if request.method != "PATCH" or not request.path.startswith(f"{JOBS}/"):
            return None
        assert request.body == {"spec": {"suspend": False}}
        name = request.path.rsplit("/", 1)[-1]
        report = train(job_settings())
        created = fake.objects[f"{JOBS}/{name}"]
        created["spec"]["suspend"] = False
        pod = f"{name}-x7k2p"
        fake.put(
            f"{PODS}/{pod}",
            {
                "metadata": {"name": pod, "labels": {"batch.kubernetes.io/job-name": name}},
                "status": {"phase": "Succeeded"},
            },
        )
        fake.logs[pod] = f"best: {report.best.name}, registered as v{report.version}\n"
        fake.objects[f"{JOBS}/{name}"]["status"] = {
            "conditions": [{"type": "Complete", "status": "True"}],
            "succeeded": 1,
        }
        return 200, created

    fake.hooks.append(on_create)


def record_shipping(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    shipped: list[str] = []

    def fake_build_and_ship(
        cluster: Cluster, training: TrainingSettings, version: str, git_sha: str | None
    ) -> str:
        del cluster, training, git_sha
        shipped.append(version)
        return f"{REPOSITORY}:{version}-abc"

    monkeypatch.setattr(cluster_pipeline, "build_and_ship", fake_build_and_ship)
    return shipped


def test_first_run_trains_installs_production_and_runs_helm_test(
    fake: FakeKube, settings: TrainingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = record_shipping(monkeypatch)
    run_jobs_in_process(fake, lambda: settings)
    lines: list[str] = []
    target, helm = cluster_with(None, lines)
    serve(fake, target, helm)

    report = run(target, settings, NATIVE_CANARY)

    assert (report.version, report.decision, report.production) == ("1", "first", "1")
    assert production(settings) == "1"
    assert shipped == ["1"]
    [(kind, overrides), (test, release)] = helm.calls
    assert kind == "upgrade"
    assert overrides["image"] == {"repository": REPOSITORY, "tag": "1-abc"}
    assert overrides["model"] == {"version": "1"}
    assert overrides["rollout"]["strategy"] == "canary"
    assert (test, release) == ("test", "tabula")
    assert "  | best: linear, registered as v1" in lines
    assert "first install of tabula: v1 as canary" in lines
    assert "Deployment tabula is ready (2/2 available, image localhost/tabula-service:1-abc)" in lines
    assert lines[-6:-1] == [
        "where to look:",
        f"  service     kubectl -n {NAMESPACE} port-forward svc/tabula 3000:3000",
        "              then http://127.0.0.1:3000/docs (Swagger UI) and http://127.0.0.1:3000/metrics",
        f"  rollout     tabula rollout status -n {NAMESPACE} --helm-release tabula",
        f"  MLflow      {settings.tracking_uri} (tabula models --model-name {settings.model_name})",
    ]
    assert (
        lines[-1]
        == f'  dashboard   Grafana, "Tabula model: {NAMESPACE}/tabula" (alerts: PrometheusRule tabula)'
    )


def installed(version: str) -> dict[str, Any]:
    return {
        "image": {"repository": REPOSITORY, "tag": f"{version}-abc"},
        "model": {"version": version},
        "rollout": {"strategy": "rollingUpdate", "provider": "argo"},
    }


def test_a_challenger_the_gate_rejects_is_not_released(
    fake: FakeKube, settings: TrainingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert train(settings.model_copy(update={"candidates": ["tiny_hgb"]})).version == "1"
    shipped = record_shipping(monkeypatch)
    run_jobs_in_process(fake, lambda: settings)  # linear: worse than the tiny HGB champion
    lines: list[str] = []
    target, helm = cluster_with(installed("1"), lines)
    serve(fake, target, helm)

    report = run(target, settings, ROLLING)

    assert (report.version, report.decision, report.production) == ("2", "rejected", "1")
    assert production(settings) == "1"
    assert shipped == []
    assert helm.calls == [("test", "tabula")]
    assert (
        "v2 lost the offline comparison to production v1: not released; the cluster keeps serving v1" in lines
    )


def test_a_promoted_challenger_rolls_out(
    fake: FakeKube, settings: TrainingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert train(settings).version == "1"  # linear is production and served
    shipped = record_shipping(monkeypatch)
    run_jobs_in_process(fake, lambda: settings.model_copy(update={"candidates": ["tiny_hgb"]}))
    lines: list[str] = []
    target, helm = cluster_with(installed("1"), lines)
    serve(fake, target, helm)

    report = run(target, settings, ROLLING)

    assert (report.version, report.decision, report.production) == ("2", "promoted", "2")
    assert shipped == ["2"]
    [(kind, overrides), test] = helm.calls
    assert (kind, test) == ("upgrade", ("test", "tabula"))
    assert overrides["image"] == {"repository": REPOSITORY, "tag": "2-abc"}
    assert "Deployment tabula is ready (2/2 available, image localhost/tabula-service:2-abc)" in lines


def test_retraining_to_the_served_model_releases_nothing(
    fake: FakeKube, settings: TrainingSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert train(settings).version == "1"
    shipped = record_shipping(monkeypatch)
    run_jobs_in_process(fake, lambda: settings)  # same data and parameters: the same model again
    lines: list[str] = []
    target, helm = cluster_with(installed("1"), lines)
    serve(fake, target, helm)

    report = run(target, settings, NATIVE_CANARY)

    assert (report.version, report.production) == ("1", "1")
    assert shipped == []
    assert helm.calls == [("test", "tabula")]
    assert "the cluster already serves v1: nothing to release" in lines
