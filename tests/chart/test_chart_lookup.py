"""The chart's `lookup`s, run by the real helm (`helm template --dry-run=server`) against the fake API
server of tests/unit/release/fake_kube.py. The fake serves what helm's client-go asks for: /version,
the discovery documents /api, /apis, /apis/<group>/<version> (Kubernetes docs, "API discovery"), and
label-filtered lists. Helm's pkg/engine/lookup_func.go lists a kind through discovery and returns an
empty result for a missing object, an error for an API group the cluster does not serve (so the chart
asks .Capabilities before looking up Rollouts)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from release.switch import WorkloadSwitchError, check_switch
from tests.chart.helm import CHART_DIR, NAMESPACE, RELEASE, helm_binary, scenario_file
from tests.unit.release.fake_kube import FakeKube

pytestmark = pytest.mark.chart

DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
ROLLOUTS = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/rollouts"
SERVER = {
    "app.kubernetes.io/name": "tabula",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "server",
}


def resource(kind: str) -> dict[str, Any]:
    plural = kind.lower() + ("es" if kind.endswith("s") else "s")
    return {
        "name": plural,
        "singularName": kind.lower(),
        "namespaced": True,
        "kind": kind,
        "verbs": ["get", "list"],
    }


# Every kind the scenarios render: helm maps each rendered object to its API resource.
CORE = [resource(kind) for kind in ("ConfigMap", "Service", "ServiceAccount", "Pod")]
GROUPS = {
    "apps/v1": ["Deployment"],
    "batch/v1": ["Job", "CronJob"],
    "policy/v1": ["PodDisruptionBudget"],
    "networking.k8s.io/v1": ["NetworkPolicy", "Ingress"],
    "autoscaling/v2": ["HorizontalPodAutoscaler"],
    "rbac.authorization.k8s.io/v1": ["Role", "RoleBinding"],
    "monitoring.coreos.com/v1": ["ServiceMonitor", "PrometheusRule"],
    "argoproj.io/v1alpha1": ["Rollout", "AnalysisTemplate"],
}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeKube, Path]]:
    fake = FakeKube()
    fake.start()
    fake.objects["/version"] = {"major": "1", "minor": "33", "gitVersion": "v1.33.1"}
    fake.objects["/api"] = {"kind": "APIVersions", "versions": ["v1"]}
    fake.objects["/api/v1"] = {"kind": "APIResourceList", "groupVersion": "v1", "resources": CORE}
    groups = {gv: [resource(kind) for kind in kinds] for gv, kinds in GROUPS.items()}
    fake.objects["/apis"] = {
        "kind": "APIGroupList",
        "groups": [
            {
                "name": gv.split("/")[0],
                "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]},
            }
            for gv in groups
        ],
    }
    for gv, resources in groups.items():
        fake.objects[f"/apis/{gv}"] = {"kind": "APIResourceList", "groupVersion": gv, "resources": resources}
    try:
        yield fake, fake.write_kubeconfig(tmp_path / "kubeconfig")
    finally:
        fake.stop()


def running(
    fake: FakeKube, path: str, name: str, replicas: int = 2, annotations: dict[str, str] | None = None
) -> None:
    """A serving workload of this release, as an earlier `helm upgrade` left it (Helm's ownership
    labels and annotations, which let the simulated install take the object over)."""
    api_version, kind = (
        ("apps/v1", "Deployment") if path == DEPLOYMENTS else ("argoproj.io/v1alpha1", "Rollout")
    )
    owned = {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NAMESPACE}
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": NAMESPACE,
        "labels": {**SERVER, "app.kubernetes.io/managed-by": "Helm"},
        "annotations": {**owned, **(annotations or {})},
    }
    fake.put(
        f"{path}/{name}",
        {"apiVersion": api_version, "kind": kind, "metadata": metadata, "spec": {"replicas": replicas}},
    )


def template(kubeconfig: Path, scenario: str, *set_values: str) -> subprocess.CompletedProcess[str]:
    args = [helm_binary(), "template", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE]
    args += ["--values", str(scenario_file(scenario)), "--dry-run=server", "--disable-openapi-validation"]
    args += ["--kubeconfig", str(kubeconfig)]
    for item in set_values:
        args += ["--set", item]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def test_a_strategy_switch_that_replaces_the_deployment_is_refused(cluster: tuple[FakeKube, Path]) -> None:
    fake, kubeconfig = cluster
    running(fake, DEPLOYMENTS, "tabula")
    result = template(kubeconfig, "canary")
    assert result.returncode != 0
    assert (
        "refusing to replace the serving workload(s) Deployment/tabula with Rollout/tabula" in result.stderr
    )
    assert "kubectl -n prod annotate deployment/tabula helm.sh/resource-policy=keep" in result.stderr
    assert "kubectl -n prod delete deployment/tabula" in result.stderr
    assert fake.made("GET", DEPLOYMENTS)
    assert fake.made("GET", ROLLOUTS)
    # The same refusal as release/switch.py's, word for word.
    with pytest.raises(WorkloadSwitchError) as caught:
        check_switch(["Deployment/tabula"], ["Rollout/tabula"], NAMESPACE)
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert line.split("): ", 1)[1] == str(caught.value)


def test_kept_or_carried_over_workloads_pass(cluster: tuple[FakeKube, Path]) -> None:
    fake, kubeconfig = cluster
    running(fake, DEPLOYMENTS, "tabula", annotations={"helm.sh/resource-policy": "keep"})
    kept = template(kubeconfig, "canary")
    assert kept.returncode == 0, kept.stderr
    running(fake, ROLLOUTS, "tabula")
    carried_over = template(kubeconfig, "canary")
    assert carried_over.returncode == 0, carried_over.stderr
    refused = template(kubeconfig, "native-blue-green")
    assert "Rollout/tabula with Deployment/tabula-blue, Deployment/tabula-green" in refused.stderr


def test_the_colour_the_hpa_takes_over_keeps_its_pods(cluster: tuple[FakeKube, Path]) -> None:
    """Switching activeColor with the HPA on: the newly active Deployment keeps the replica count it
    runs (the preview's full size), rather than losing the field and dropping to Kubernetes' default of
    1 pod; without a live object the field is left to the HPA as before."""
    fake, kubeconfig = cluster
    running(fake, DEPLOYMENTS, "tabula-blue", replicas=4)
    running(fake, DEPLOYMENTS, "tabula-green", replicas=4)
    result = template(kubeconfig, "native-blue-green", "rollout.native.blueGreen.previewReplicas=4")
    assert result.returncode == 0, result.stderr
    deployments = {
        d["metadata"]["name"]: d["spec"]
        for d in yaml.safe_load_all(result.stdout)
        if d and d["kind"] == "Deployment"
    }
    assert deployments["tabula-green"]["replicas"] == 4  # active (activeColor: green), scaled by the HPA
    assert deployments["tabula-blue"]["replicas"] == 4  # the old colour on standby


def serving_colour(fake: FakeKube, colour: str) -> None:
    """The main Service as the previous revision left it (owned by the release), selecting `colour`."""
    metadata = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": RELEASE, "meta.helm.sh/release-namespace": NAMESPACE},
    }
    fake.put(
        f"/api/v1/namespaces/{NAMESPACE}/services/{RELEASE}",
        {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
         "spec": {"selector": {**SERVER, "tabula.io/track": colour}}},
    )  # fmt: skip


def test_switching_to_an_undersized_colour_is_refused(cluster: tuple[FakeKube, Path]) -> None:
    """native-blue-green switches to green; blue serves with 4 pods, green has 1 ready pod."""
    fake, kubeconfig = cluster
    serving_colour(fake, "blue")
    running(fake, DEPLOYMENTS, "tabula-blue", replicas=4)
    running(fake, DEPLOYMENTS, "tabula-green", replicas=1)
    fake.objects[f"{DEPLOYMENTS}/tabula-green"]["status"] = {"readyReplicas": 1}
    refused = template(kubeconfig, "native-blue-green", "autoscaling.enabled=false", "replicaCount=4")
    assert refused.returncode != 0
    assert (
        "rollout.native.blueGreen.activeColor=green would switch traffic from blue (4 pods) to green with "
        "1 ready pods: first set rollout.native.blueGreen.previewReplicas=4 and wait until tabula-green "
        "is ready"
    ) in refused.stderr
    # Step 2 of the loop's order: green scaled up and ready, so the switch goes through.
    fake.objects[f"{DEPLOYMENTS}/tabula-green"]["status"] = {"readyReplicas": 4}
    switched = template(
        kubeconfig, "native-blue-green", "autoscaling.enabled=false", "replicaCount=4",
        "rollout.native.blueGreen.previewReplicas=4",
    )  # fmt: skip
    assert switched.returncode == 0, switched.stderr
    # No switch (green already serves): nothing to check.
    serving_colour(fake, "green")
    fake.objects[f"{DEPLOYMENTS}/tabula-green"]["status"] = {"readyReplicas": 1}
    assert template(kubeconfig, "native-blue-green", "autoscaling.enabled=false").returncode == 0
