"""release/switch.py: the loop's check that an upgrade never replaces every serving workload at once,
against the fake API server (lists filtered by label selector as the API server does), with objects
rendered by the real chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from release.cluster import Cluster
from release.config import ReleaseSettings
from release.drivers import driver_for
from release.errors import ReleaseError
from release.helm import Helm
from release.kube import Kube
from release.switch import WorkloadSwitchError, check_switch, require_safe_switch, serving_workloads
from tests.unit.release.fake_helm import RecordingFakeHelm
from tests.unit.release.fake_kube import FakeKube

pytestmark = pytest.mark.unit

CHART = Path("charts/tabula")
DEPLOYMENTS = "/apis/apps/v1/namespaces/tabula/deployments"
ROLLOUTS = "/apis/argoproj.io/v1alpha1/namespaces/tabula/rollouts"
SERVER = {
    "app.kubernetes.io/name": "tabula",
    "app.kubernetes.io/instance": "tabula",
    "app.kubernetes.io/component": "server",
}


def running(fake: FakeKube, path: str, name: str, annotations: dict[str, str] | None = None) -> None:
    metadata: dict[str, Any] = {"name": name, "labels": dict(SERVER)}
    if annotations:
        metadata["annotations"] = annotations
    fake.put(f"{path}/{name}", {"metadata": metadata, "spec": {"replicas": 2}})


def rendered(helm: Helm, **values: Any) -> list[dict[str, Any]]:
    return helm.template("tabula", CHART, {}, [], values)


ARGO_CANARY = {
    "image": {"tag": "4-b2c3d4e"},
    "replicaCount": 10,
    "rollout": {"strategy": "canary", "analysis": {"enabled": False}},
}
NATIVE_BLUE_GREEN = {
    "image": {"tag": "4-b2c3d4e"},
    "rollout": {"strategy": "blueGreen", "provider": "native"},
}


def test_deployment_to_rollout_is_refused_with_the_procedure(fake: FakeKube, kube: Kube, helm: Helm) -> None:
    running(fake, DEPLOYMENTS, "tabula")
    with pytest.raises(WorkloadSwitchError) as caught:
        require_safe_switch(kube, rendered(helm, **ARGO_CANARY))
    assert str(caught.value) == (
        "refusing to replace the serving workload(s) Deployment/tabula with Rollout/tabula: Helm would "
        "delete the running pods before the new ones are ready (an outage). Switch safely: 1) kubectl -n "
        "tabula annotate deployment/tabula helm.sh/resource-policy=keep (Helm then leaves it running and "
        "this check lets the upgrade through); 2) run the upgrade again; 3) wait until the new workload is "
        "ready and serving; 4) kubectl -n tabula delete deployment/tabula"
    )
    assert isinstance(caught.value, ReleaseError)  # the CLI's exit code and one-line report
    [listing] = fake.made("GET", DEPLOYMENTS)
    assert listing.query["labelSelector"] == [
        "app.kubernetes.io/name=tabula,app.kubernetes.io/instance=tabula,app.kubernetes.io/component=server"
    ]


def test_a_kept_workload_lets_the_switch_through(fake: FakeKube, kube: Kube, helm: Helm) -> None:
    running(fake, DEPLOYMENTS, "tabula", {"helm.sh/resource-policy": "keep"})
    require_safe_switch(kube, rendered(helm, **ARGO_CANARY))


def test_rollout_to_native_blue_green_is_refused(fake: FakeKube, kube: Kube, helm: Helm) -> None:
    running(fake, ROLLOUTS, "tabula")
    with pytest.raises(WorkloadSwitchError, match=r"Rollout/tabula with Deployment/tabula-blue: "):
        require_safe_switch(kube, rendered(helm, **NATIVE_BLUE_GREEN))


def test_upgrades_that_keep_a_workload_pass(fake: FakeKube, kube: Kube, helm: Helm) -> None:
    running(fake, DEPLOYMENTS, "tabula")
    running(fake, DEPLOYMENTS, "tabula-canary")
    # Native canary ends: the canary Deployment goes, the stable one stays.
    require_safe_switch(kube, rendered(helm, image={"tag": "4-b2c3d4e"}))
    # Another release's workloads never count.
    other = {**SERVER, "app.kubernetes.io/instance": "other"}
    fake.put(f"{ROLLOUTS}/other", {"metadata": {"name": "other", "labels": other}})
    require_safe_switch(kube, rendered(helm, image={"tag": "4-b2c3d4e"}))


def test_a_first_install_and_a_cluster_without_argo_pass(fake: FakeKube, kube: Kube, helm: Helm) -> None:
    fake.fail("GET", "/apis/argoproj.io/", 404, "the server could not find the requested resource")
    require_safe_switch(kube, rendered(helm, **ARGO_CANARY))


def test_the_pure_check() -> None:
    check_switch([], ["Rollout/tabula"], "prod")
    check_switch(["Deployment/tabula-blue", "Deployment/tabula-green"], ["Deployment/tabula-green"], "prod")
    with pytest.raises(WorkloadSwitchError, match=r"annotate deployment/a deployment/b helm.sh"):
        check_switch(["Deployment/a", "Deployment/b"], ["Rollout/a"], "prod")
    assert serving_workloads(
        [
            {
                "kind": "Deployment",
                "metadata": {"name": "x", "labels": {"app.kubernetes.io/component": "server"}},
            },
            {"kind": "Job", "metadata": {"name": "t", "labels": {"app.kubernetes.io/component": "server"}}},
            {
                "kind": "Deployment",
                "metadata": {"name": "y", "labels": {"app.kubernetes.io/component": "load"}},
            },
        ]
    ) == ["Deployment/x"]


def test_the_release_loops_candidate_upgrade_is_guarded(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube, helm: Helm
) -> None:
    """``tabula release --strategy canary`` over a rollingUpdate release: the loop's driver upgrades
    through ``Cluster.upgrade``, which refuses before ``helm upgrade`` runs."""
    fake.serve_group("argoproj.io/v1alpha1", {"Rollout": "rollouts", "AnalysisTemplate": "analysistemplates"})
    fake.serve_group(
        "monitoring.coreos.com/v1", {"ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}
    )
    running(fake, DEPLOYMENTS, "tabula")
    installed = {"image": {"repository": "localhost/tabula-service", "tag": "3-ccc"}}
    recording = RecordingFakeHelm(helm, installed)
    target = Cluster(settings, recording, kube, lambda _: None)
    driver = driver_for(target, target.installed_values(), "canary", "argo")
    with pytest.raises(
        WorkloadSwitchError, match=r"^refusing to replace .*Deployment/tabula with Rollout/tabula"
    ):
        driver.deploy_candidate("localhost/tabula-service:4-ddd", "4")
    assert recording.calls == []
