"""What the chart must do so that it works on a real cluster (issue 10): each test renders the values
that broke there and checks the objects against the behaviour the named Kubernetes, Helm or Argo
Rollouts documentation describes."""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART_DIR, NAMESPACE, RELEASE, Manifest, render, run_helm, scenario_file

pytestmark = pytest.mark.chart


def objects(values_file: str, *set_values: str) -> list[Manifest]:
    result = render([scenario_file(values_file)], list(set_values))
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def refused(values_file: str, *set_values: str) -> str:
    """The one-line error helm prints when the chart fails the render."""
    result = render([scenario_file(values_file)], list(set_values))
    assert result.returncode != 0, f"rendered {set_values}"
    [line] = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    return line


def one(found: list[Manifest], kind: str, name: str | None = None) -> Manifest:
    matching = [o for o in found if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(matching) == 1, f"{kind} {name}: {len(matching)}"
    return matching[0]


def training_pod(job: Manifest) -> dict[str, Any]:
    spec = job["spec"]["jobTemplate"]["spec"] if job["kind"] == "CronJob" else job["spec"]
    return dict(spec["template"]["spec"])


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def mounts_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["mountPath"]: m for m in container.get("volumeMounts", [])}


# --- 1. training data ------------------------------------------------------------------------------


def test_training_pods_get_a_writable_scikit_learn_data_home(helm: str) -> None:
    """fetch_california_housing() writes to SCIKIT_LEARN_DATA (default ~/scikit_learn_data, on the
    read-only root): the chart points it at an emptyDir, in the Job and the CronJob alike."""
    found = objects("training-cronjob")
    for workload in (one(found, "Job"), one(found, "CronJob")):
        pod = training_pod(workload)
        [container] = pod["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        env = env_of(container)
        home = env["SCIKIT_LEARN_DATA"]["value"]
        assert home == "/var/lib/tabula/scikit-learn"
        assert "TABULA_DATA_PATH" not in env  # the default: scikit-learn downloads the data
        mount = mounts_of(container)[home]
        [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["emptyDir"] == {"sizeLimit": "1Gi"}
        assert not mount.get("readOnly", False)


def test_training_data_from_an_existing_claim_and_extra_env(rendered: Any) -> None:
    r = rendered("training-data")
    pod = training_pod(r.one("Job"))
    [container] = pod["containers"]
    env = env_of(container)
    assert env["TABULA_DATA_PATH"] == {"name": "TABULA_DATA_PATH", "value": "/mnt/data/cal_housing.csv.gz"}
    assert mounts_of(container)["/mnt/data"] == {"name": "data", "mountPath": "/mnt/data", "readOnly": True}
    [data] = [v for v in pod["volumes"] if v["name"] == "data"]
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": "tabula-data", "readOnly": True}}
    # The download cache stays writable even though the data volume is read-only.
    home = env["SCIKIT_LEARN_DATA"]["value"]
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == mounts_of(container)[home]["name"])
    # Extra env: any name, valueFrom allowed, after the chart's own variables.
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"] == {
        "secretKeyRef": {"name": "artifact-store", "key": "access-key"}
    }
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"]["value"] == "60"


def test_a_data_volume_without_a_file_becomes_the_writable_data_home(helm: str) -> None:
    found = objects(
        "training-data",
        "training.data.file=",
        "training.data.existingClaim=",
        "training.data.volume.nfs.server=nfs.example.org",
        "training.data.volume.nfs.path=/exports/tabula",
    )
    pod = training_pod(one(found, "Job"))
    [container] = pod["containers"]
    env = env_of(container)
    assert "TABULA_DATA_PATH" not in env
    assert env["SCIKIT_LEARN_DATA"]["value"] == "/mnt/data"
    assert mounts_of(container)["/mnt/data"]["readOnly"] is False
    [data] = [v for v in pod["volumes"] if v["name"] == "data"]
    assert data == {"name": "data", "nfs": {"server": "nfs.example.org", "path": "/exports/tabula"}}


def test_a_data_volume_needs_a_source(helm: str) -> None:
    message = refused("training-data", "training.data.existingClaim=")
    assert "training.data.enabled needs training.data.existingClaim or training.data.volume" in message


@pytest.mark.parametrize(
    "set_values",
    [
        ["training.extraEnv[0].name=A", "training.extraEnv[0].value=1", "training.extraEnv[0].valueFrom.x=y"],
        ["training.extraEnv[0].value=nameless"],
        ["training.data.mountPath=relative"],
        ["training.jobHook=pre-install"],
    ],
    ids=["value and valueFrom", "no name", "relative mount path", "unsupported hook"],
)
def test_schema_rejects_bad_training_values(helm: str, set_values: list[str]) -> None:
    assert "values don't meet the specifications of the schema" in refused("training-data", *set_values)


# --- 2. the one-off Job is a Helm hook ------------------------------------------------------------


def test_training_job_is_a_post_install_hook_with_a_stable_name(rendered: Any) -> None:
    """Helm docs, topics/charts_hooks.md: a `post-install` hook runs once, after the release's objects
    are applied; `before-hook-creation` deletes the previous hook object only when the hook runs again;
    hook objects are not release objects, so upgrades neither recreate nor delete them."""
    job = rendered("training-cronjob").one("Job")
    assert job["metadata"]["name"] == "tabula-train"  # no revision: one training, not one per upgrade
    assert job["metadata"]["annotations"] == {
        "helm.sh/hook": "post-install",
        "helm.sh/hook-weight": "0",
        "helm.sh/hook-delete-policy": "before-hook-creation",
    }
    assert "annotations" not in rendered("training-cronjob").one("CronJob")["metadata"]
    retrain = rendered("training-data").one("Job")["metadata"]["annotations"]
    assert retrain["helm.sh/hook"] == "post-install,post-upgrade"


def test_notes_say_when_the_training_job_runs(helm: str) -> None:
    notes = install_notes("training-cronjob")
    assert "Training Job tabula-train runs as a Helm hook (post-install), not on other" in notes
    assert "kubectl -n prod logs job/tabula-train -f" in notes
    assert "Training Job" not in install_notes("default")


# --- 4. native blue/green without a capacity drop -------------------------------------------------

BLUE, GREEN = "3-a1b2c3d", "4-b2c3d4e"


def blue_green_step(*set_values: str) -> tuple[str, dict[str, int]]:
    """(colour the main Service selects, replicas per colour) of one step of the switch."""
    found = objects(
        "native-blue-green",
        "autoscaling.enabled=false",
        "replicaCount=4",
        "rollout.native.blueGreen.activeColor=blue",
        *set_values,
    )
    replicas = {
        d["spec"]["selector"]["matchLabels"]["tabula.io/track"]: d["spec"]["replicas"]
        for d in found
        if d["kind"] == "Deployment"
    }
    return one(found, "Service", RELEASE)["spec"]["selector"]["tabula.io/track"], replicas


def test_native_blue_green_switch_keeps_full_capacity_at_every_step(helm: str) -> None:
    """The sequence the release loop runs (values in NOTES.txt and /work/notes/chart.md): scale the idle
    colour up, switch, keep the old colour for scaleDownDelaySeconds, scale it down."""
    steps = [
        blue_green_step(),  # 0: blue serves, green is a 1-pod preview
        blue_green_step("rollout.native.blueGreen.previewReplicas=4"),  # 1: green at full size
        blue_green_step(
            "rollout.native.blueGreen.previewReplicas=4", "rollout.native.blueGreen.activeColor=green"
        ),  # 2: switch; blue stays at full size
        blue_green_step("rollout.native.blueGreen.activeColor=green"),  # 3: after the delay
    ]
    assert steps == [
        ("blue", {"blue": 4, "green": 1}),
        ("blue", {"blue": 4, "green": 4}),
        ("green", {"blue": 4, "green": 4}),
        ("green", {"blue": 1, "green": 4}),
    ]
    # The colour the Service selects has full capacity before and after each step.
    for (before, replicas_before), (after, replicas_after) in itertools.pairwise(steps):
        assert replicas_before[after] == 4 or before == after, "switched to an undersized colour"
        assert replicas_after[after] == 4


# --- 5. pod-ratio canaries ------------------------------------------------------------------------


def argo_canary_share(replicas: int, weight: int, surge: bool) -> float:
    """Argo Rollouts v1.8.3 utils/replicaset/canary.go approximateWeightedCanaryStableReplicaCounts,
    reduced to the share of pods: floor/ceil of replicas*weight/100 canary pods out of replicas (or
    replicas+1 with a surge), the ceiling only if a stable pod is left, no zero canary for 1-99%."""
    exact = replicas * weight / 100
    low, high = math.floor(exact), math.ceil(exact)

    def tied(total: int) -> bool:  # floorCeilingTied
        return math.modf(total * weight / 100)[0] == 0.5

    options = []
    if high < replicas:
        options.append((high, replicas))
    if low != 0 and not tied(replicas):
        options.append((low, replicas))
    if surge:
        options.append((high, replicas + 1))
        if low != 0 and not tied(replicas + 1):
            options.append((low, replicas + 1))
    best = options[0]
    for option in options[1:]:  # the first option wins unless a later one is strictly closer
        if abs(100 * option[0] / option[1] - weight) < abs(100 * best[0] / best[1] - weight):
            best = option
    return 100 * best[0] / best[1]


@pytest.mark.parametrize(
    ("replicas", "weight", "max_surge"),
    [
        (2, 10, "25%"),
        (2, 60, "0"),
        (3, 30, "25%"),
        (4, 25, "1"),
        (5, 41, "0"),
        (10, 10, "25%"),
        (3, 50, "0"),
        (7, 55, "25%"),
    ],
)
def test_argo_pod_ratio_canary_refuses_weights_the_pods_cannot_express(
    helm: str, replicas: int, weight: int, max_surge: str
) -> None:
    """Argo docs/features/canary/index.md: without traffic management the controller approximates
    setWeight by pod counts; the chart fails when that approximation is more than 5 points off."""
    values = [
        f"replicaCount={replicas}",
        "rollout.canary.steps[0].setWeight=" + str(weight),
        "rollout.canary.steps[1].pause.duration=1m",
        f"rollout.canary.maxSurge={max_surge}",
    ]
    expected = argo_canary_share(replicas, weight, surge=max_surge not in {"0", "0%"})
    result = render([scenario_file("canary")], [*values, "rollout.canary.weightCheck=fail"])
    if abs(expected - weight) > 5:
        assert result.returncode != 0, f"{weight}% on {replicas} pods is {expected:.0f}%"
        assert f"setWeight {weight} cannot be expressed with {replicas} pods" in result.stderr
        assert f"about {expected:.0f}% of the traffic" in result.stderr
    else:
        assert result.returncode == 0, result.stderr


def test_pod_ratio_check_uses_the_hpa_floor_and_skips_traffic_routing(helm: str) -> None:
    fail = "rollout.canary.weightCheck=fail"
    message = refused("canary", "autoscaling.enabled=true", "autoscaling.minReplicas=2", fail)
    assert "cannot be expressed with 2 pods" in message
    # With NGINX traffic routing the weight is a traffic share, independent of the pod count.
    assert objects("argo-canary-nginx", "autoscaling.minReplicas=2", fail)


def test_pod_ratio_canary_warns_in_the_notes_by_default(helm: str) -> None:
    notes = install_notes("canary", "replicaCount=2")
    assert "WARNING: this canary does not send the traffic its steps say" in notes
    assert "  - setWeight 10 cannot be expressed with 2 pods" in notes
    assert "  - setWeight 60 cannot be expressed with 2 pods" in notes  # 2 of 3 pods with the surge
    assert "rollout.canary.weightCheck=fail refuses such steps" in notes
    assert "WARNING: this canary" not in install_notes("canary")  # 10 pods express 10/30/60%


def test_native_canary_refuses_a_majority_of_pods_and_notes_its_share(helm: str) -> None:
    message = refused("native-canary", "replicaCount=1", "rollout.native.canary.replicas=2")
    assert "gives the canary 67% of the Service's traffic" in message
    notes = install_notes("native-canary")
    assert "the canary serves about 25% of in-cluster traffic" in notes  # 1 of 4 pods


# --- 6. preStop ----------------------------------------------------------------------------------


def test_pre_stop_uses_the_kubelet_sleep_action(rendered: Any) -> None:
    """Kubernetes docs (concepts/containers/container-lifecycle-hooks, KEP-3960): `sleep` is a
    lifecycle handler of its own, beta and on by default from 1.30, so images need no sleep binary."""
    [server] = rendered("default").one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert server["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    without = objects("default", "preStopSleepSeconds=0")
    [server] = one(without, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "lifecycle" not in server  # a 0 s sleep action is invalid before Kubernetes 1.33


def test_clusters_without_the_sleep_action_are_refused_by_the_charts_kube_version(helm: str) -> None:
    """The fallback to an exec sleep would only serve Kubernetes 1.29 (sleep action alpha, off);
    Chart.yaml's kubeVersion already makes Helm refuse such a cluster."""
    result = run_helm("template", RELEASE, str(CHART_DIR), "--kube-version", "1.29.9")
    assert result.returncode != 0
    assert "chart requires kubeVersion: >=1.30.0-0" in result.stderr


# --- 7. NetworkPolicy and external Services -------------------------------------------------------


def open_rules(policy: Manifest) -> list[dict[str, Any]]:
    """Ingress rules with no `from`: Kubernetes docs (NetworkPolicy) say they admit every source."""
    return [rule for rule in policy["spec"]["ingress"] if "from" not in rule]


def test_cluster_ip_service_admits_only_named_peers(rendered: Any) -> None:
    assert open_rules(rendered("default").one("NetworkPolicy")) == []


@pytest.mark.parametrize("service_type", ["NodePort", "LoadBalancer"])
def test_external_services_admit_clients_from_anywhere_on_the_service_port(
    helm: str, service_type: str
) -> None:
    policy = one(objects("default", f"service.type={service_type}"), "NetworkPolicy")
    assert open_rules(policy) == [{"ports": [{"port": "http", "protocol": "TCP"}]}]


def test_external_clients_can_be_narrowed(helm: str) -> None:
    found = objects(
        "default", "service.type=LoadBalancer", "networkPolicy.externalClients[0].ipBlock.cidr=203.0.113.0/24"
    )
    policy = one(found, "NetworkPolicy")
    assert open_rules(policy) == []
    assert policy["spec"]["ingress"][-1] == {
        "ports": [{"port": "http", "protocol": "TCP"}],
        "from": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
    }


# --- 8. kube-prometheus-stack selectors -------------------------------------------------------------


def install_notes(values_file: str, *set_values: str) -> str:
    args = ["install", RELEASE, str(CHART_DIR), "--namespace", NAMESPACE, "--dry-run=client"]
    args += ["--values", str(scenario_file(values_file))]
    for item in set_values:
        args += ["--set", item]
    result = run_helm(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout.split("NOTES:", 1)[1]


def test_notes_warn_that_kube_prometheus_stack_ignores_unlabelled_monitors(helm: str) -> None:
    notes = install_notes("default")
    assert "kube-prometheus-stack selects ServiceMonitors and PrometheusRules by the label" in notes
    assert "--set monitoring.serviceMonitor.labels.release=kube-prometheus-stack" in notes
    assert "--set monitoring.rules.labels.release=kube-prometheus-stack" in notes
    labelled = install_notes(
        "default",
        "monitoring.serviceMonitor.labels.release=kube-prometheus-stack",
        "monitoring.rules.labels.release=kube-prometheus-stack",
    )
    assert "kube-prometheus-stack selects" not in labelled
    assert "kube-prometheus-stack selects" not in install_notes("monitoring-off")


def test_readme_gives_the_exact_labels(helm: str) -> None:
    readme = (CHART_DIR / "README.md").read_text()
    section = readme.split("## Monitoring", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"serviceMonitor:\n\s+labels:\n\s+release: kube-prometheus-stack", section)
    assert re.search(r"rules:\n\s+labels:\n\s+release: kube-prometheus-stack", section)


# --- 9. strategy switches --------------------------------------------------------------------------


def test_checks_render_nothing(rendered: Any) -> None:
    """templates/checks.yaml only fails or passes; it adds no object to any scenario."""
    result = run_helm(
        "template", RELEASE, str(CHART_DIR), "--values", str(scenario_file("default")),
        "--show-only", "templates/checks.yaml",
    )  # fmt: skip
    assert result.returncode != 0
    assert "could not find template templates/checks.yaml" in result.stderr
    assert Path(CHART_DIR / "templates" / "checks.yaml").is_file()
