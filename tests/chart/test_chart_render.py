"""`helm template` per scenario: offline validation of every object and per-scenario assertions."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.helm import (
    KUBERNETES_VERSIONS,
    REPO_ROOT,
    Manifest,
    Rendered,
    crd_errors,
    render,
    scenario_file,
    scenarios,
    walk,
)

pytestmark = pytest.mark.chart

Render = Callable[[str], Rendered]
CRD_GROUPS = ("argoproj.io/", "monitoring.coreos.com/")
SERVER_SELECTOR = {
    "app.kubernetes.io/name": "tabula",
    "app.kubernetes.io/instance": "tabula",
    "app.kubernetes.io/component": "server",
}
# The shadow track's pods (rollout.shadow): selected apart from the serving pods, so no live traffic.
SHADOW_SELECTOR = SERVER_SELECTOR | {"app.kubernetes.io/component": "shadow"}
WORKLOAD_KINDS = ("Deployment", "Rollout")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_custom(manifest: Manifest) -> bool:
    return str(manifest["apiVersion"]).startswith(CRD_GROUPS)


def embedded_builtin_objects(manifest: Manifest) -> list[Manifest]:
    """Built-in objects inside custom resources, so Kubernetes' own schemas check them too."""
    if manifest["kind"] == "Rollout":
        spec = manifest["spec"]
        return [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": manifest["metadata"]["name"]},
                "spec": {"selector": spec["selector"], "template": spec["template"]},
            }
        ]
    if manifest["kind"] == "AnalysisTemplate":
        return [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": m["name"]},
                "spec": m["provider"]["job"]["spec"],
            }
            for m in manifest["spec"]["metrics"]
            if "job" in m["provider"]
        ]
    return []


def pod_specs(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    """(object name, pod spec) of every pod the scenario can create."""
    specs: list[tuple[str, dict[str, Any]]] = []
    for o in rendered.objects:
        name, kind = o["metadata"]["name"], o["kind"]
        if kind in ("Deployment", "Rollout", "Job"):
            specs.append((name, o["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            specs.append((name, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif kind == "Pod":
            specs.append((name, o["spec"]))
        elif kind == "AnalysisTemplate":
            specs += [(name, job["spec"]["template"]["spec"]) for job in _analysis_jobs(o)]
    return specs


def _analysis_jobs(template: Manifest) -> list[dict[str, Any]]:
    return [m["provider"]["job"] for m in template["spec"]["metrics"] if "job" in m["provider"]]


def serving_workloads(rendered: Rendered) -> list[Manifest]:
    return [o for o in rendered.objects if o["kind"] in WORKLOAD_KINDS]


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", scenarios())
def test_builtin_objects_validate_strictly_on_every_kubernetes_version(
    rendered: Render, scenario: str
) -> None:
    objects = rendered(scenario).objects
    builtin = [o for o in objects if not is_custom(o)]
    builtin += [e for o in objects if is_custom(o) for e in embedded_builtin_objects(o)]
    errors = []
    for version in KUBERNETES_VERSIONS:
        for manifest in builtin:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                path = ".".join(str(p) for p in error.path)
                errors.append(
                    f"{version} {manifest['kind']}/{manifest['metadata']['name']} {path}: {error.message}"
                )
            except kubernetes_validate.SchemaNotFoundError as error:
                errors.append(f"{version}: {error.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("scenario", scenarios())
def test_custom_resources_validate_against_crd_schemas(rendered: Render, scenario: str) -> None:
    custom = [o for o in rendered(scenario).objects if is_custom(o)]
    errors = [f"{o['kind']}/{o['metadata']['name']} {e}" for o in custom for e in crd_errors(o)]
    assert not errors, "\n".join(errors)


def test_validators_reject_unknown_fields(rendered: Render) -> None:
    """The two validators are strict: a misspelt field in a built-in or a custom resource is an error."""
    canary = rendered("canary")
    rollout = copy.deepcopy(canary.one("Rollout"))
    rollout["spec"]["strategy"]["canary"]["stepz"] = []
    assert any("stepz" in e for e in crd_errors(rollout))
    monitor = copy.deepcopy(canary.one("ServiceMonitor"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert crd_errors(monitor)
    deployment = copy.deepcopy(rendered("default").one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


# --- what each scenario renders ----------------------------------------------------------------------

EXPECTED: dict[str, tuple[set[str], set[str]]] = {
    # scenario: (kinds present, kinds absent)
    "default": (
        {"Deployment", "Service", "ServiceMonitor", "PrometheusRule", "PodDisruptionBudget", "NetworkPolicy"},
        {"Rollout", "AnalysisTemplate", "HorizontalPodAutoscaler", "Ingress", "Job", "CronJob"},
    ),
    "canary": ({"Rollout", "AnalysisTemplate", "ServiceMonitor"}, {"Deployment", "HorizontalPodAutoscaler"}),
    "argo-canary-nginx": (
        {"Rollout", "AnalysisTemplate", "Ingress", "HorizontalPodAutoscaler"},
        {"Deployment"},
    ),
    "blue-green": ({"Rollout", "AnalysisTemplate"}, {"Deployment", "Ingress"}),
    "native-canary": ({"Deployment"}, {"Rollout", "AnalysisTemplate", "Ingress"}),
    "native-canary-ingress": ({"Deployment", "Ingress"}, {"Rollout", "AnalysisTemplate"}),
    "native-blue-green": ({"Deployment", "HorizontalPodAutoscaler"}, {"Rollout", "AnalysisTemplate"}),
    "hpa": ({"Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget"}, {"Rollout"}),
    "monitoring-off": (
        {"Deployment", "Service"},
        {"ServiceMonitor", "PrometheusRule", "NetworkPolicy", "PodDisruptionBudget", "AnalysisTemplate"},
    ),
    "training-cronjob": ({"Deployment", "Job", "CronJob", "Role", "RoleBinding"}, {"Rollout"}),
    "long-names": ({"Deployment", "Job", "CronJob"}, {"Rollout"}),
    "training-data": ({"Deployment", "Job", "ConfigMap", "ServiceAccount"}, {"Rollout", "CronJob"}),
    # Argo serves; the shadow track is a Deployment of its own.
    "shadow": ({"Rollout", "AnalysisTemplate", "Deployment", "NetworkPolicy"}, {"HorizontalPodAutoscaler"}),
}


def test_every_scenario_has_expectations() -> None:
    assert set(EXPECTED) == set(scenarios())


@pytest.mark.parametrize("scenario", scenarios())
def test_objects_present_and_absent(rendered: Render, scenario: str) -> None:
    present, absent = EXPECTED[scenario]
    kinds = rendered(scenario).kinds()
    assert present <= kinds, f"missing {present - kinds}"
    assert not absent & kinds, f"unexpected {absent & kinds}"
    dashboards = [
        c for c in rendered(scenario).of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard")
    ]
    assert len(dashboards) == (0 if scenario == "monitoring-off" else 1)


@pytest.mark.parametrize("scenario", scenarios())
def test_object_names_fit_kubernetes_limits(rendered: Render, scenario: str) -> None:
    for o in rendered(scenario).objects:
        name = o["metadata"]["name"]
        limit = 52 if o["kind"] == "CronJob" else 63
        assert len(name) <= limit, f"{o['kind']} name {name!r}"
        assert DNS_LABEL.match(name), f"{o['kind']} name {name!r}"
        for key, value in o["metadata"].get("labels", {}).items():
            assert len(str(value)) <= 63, f"{o['kind']}/{name} label {key}={value!r}"


def test_long_names_are_cut_but_stay_distinct(rendered: Render) -> None:
    names = [(o["kind"], o["metadata"]["name"]) for o in rendered("long-names").objects]
    assert len(names) == len(set(names))
    assert any(len(name) == 63 for _, name in names)


# --- selectors ------------------------------------------------------------------------------------


def selector_of(o: Manifest) -> dict[str, str]:
    spec = o["spec"]
    if o["kind"] == "Service":
        return dict(spec["selector"])
    if o["kind"] == "NetworkPolicy":
        return dict(spec["podSelector"]["matchLabels"])
    return dict(spec["selector"]["matchLabels"])


@pytest.mark.parametrize("scenario", scenarios())
def test_selectors_are_the_stable_server_selector(rendered: Render, scenario: str) -> None:
    r = rendered(scenario)
    for o in r.objects:
        if o["kind"] in ("Deployment", "Rollout", "Service", "PodDisruptionBudget", "NetworkPolicy"):
            selector = selector_of(o)
            shadow = o["metadata"]["name"].startswith("tabula-shadow")
            expected = dict(SHADOW_SELECTOR if shadow else SERVER_SELECTOR)
            extra = set(selector) - set(expected)
            assert {k: selector[k] for k in expected} == expected, f"{o['kind']}/{o['metadata']['name']}"
            # The only extra key a selector may carry is the track of native modes.
            assert extra <= {"tabula.io/track"}, f"{o['kind']}/{o['metadata']['name']}: {extra}"
        if o["kind"] in WORKLOAD_KINDS:
            labels = o["spec"]["template"]["metadata"]["labels"]
            assert selector_of(o).items() <= labels.items(), "pod labels must match the workload selector"


def test_stable_deployment_selector_is_identical_across_scenarios(rendered: Render) -> None:
    """Switching between rolling update and native canary must never touch the immutable selector."""
    selectors = {
        scenario: json.dumps(selector_of(rendered(scenario).one("Deployment", "tabula")), sort_keys=True)
        for scenario in (
            "default",
            "hpa",
            "monitoring-off",
            "training-cronjob",
            "native-canary",
            "native-canary-ingress",
        )
    }
    assert len(set(selectors.values())) == 1, selectors


def test_rollout_selector_is_the_server_selector(rendered: Render) -> None:
    for scenario in ("canary", "blue-green", "argo-canary-nginx"):
        assert selector_of(rendered(scenario).one("Rollout")) == SERVER_SELECTOR


@pytest.mark.parametrize("scenario", scenarios())
def test_service_monitor_scrapes_each_pod_once(rendered: Render, scenario: str) -> None:
    r = rendered(scenario)
    monitors = r.of_kind("ServiceMonitor")
    if not monitors:
        assert scenario == "monitoring-off"
        return
    wanted = monitors[0]["spec"]["selector"]["matchLabels"]
    matched = [s for s in r.of_kind("Service") if wanted.items() <= s["metadata"]["labels"].items()]
    # One headless Service per set of pods: the serving pods, and the shadow track's when it runs.
    shadow_runs = any(o["metadata"]["name"] == "tabula-shadow" for o in r.of_kind("Deployment"))
    expected = [SERVER_SELECTOR, SHADOW_SELECTOR] if shadow_runs else [SERVER_SELECTOR]
    assert [s["spec"]["selector"] for s in matched] == expected, [s["metadata"]["name"] for s in matched]
    for metrics in matched:
        assert metrics["spec"]["clusterIP"] == "None"
        assert monitors[0]["spec"]["endpoints"][0]["port"] in {p["name"] for p in metrics["spec"]["ports"]}


# --- pods -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", scenarios())
def test_every_pod_is_restricted_and_sized(rendered: Render, scenario: str) -> None:
    for name, spec in pod_specs(rendered(scenario)):
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, name
        assert pod_sc["seccompProfile"]["type"] == "RuntimeDefault", name
        assert spec["automountServiceAccountToken"] is False or "train" in name, name
        mounts = set()
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert c["resources"]["requests"]["cpu"], name
            assert c["resources"]["requests"]["memory"], name
            assert c["resources"]["limits"]["memory"], name
            mounts |= {m["mountPath"] for m in c.get("volumeMounts", [])}
        if name.endswith("test-prediction"):
            continue  # needs no scratch space: stdlib urllib only
        assert "/tmp" in mounts, name  # noqa: S108 - the pods' scratch mount, not a file of this test
        empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
        for c in spec["containers"]:
            for mount in c.get("volumeMounts", []):
                # The only other volume is training's data volume (`training.data`), which users bring.
                if "train" in name and mount["name"] == "data":
                    continue
                # And the serving pods' mirror control (rollout.shadow), a ConfigMap mounted read-only.
                if mount["name"] == "mirror" and mount["mountPath"] == "/etc/tabula/mirror":
                    assert mount["readOnly"] is True, name
                    continue
                assert mount["name"] in empty_dirs, f"{name}: {mount['mountPath']} must be an emptyDir"


@pytest.mark.parametrize("scenario", scenarios())
def test_serving_pods_probe_drain_and_listen_on_3000(rendered: Render, scenario: str) -> None:
    r = rendered(scenario)
    values = r.values
    for workload in serving_workloads(r):
        pod = workload["spec"]["template"]
        spec = pod["spec"]
        (server,) = spec["containers"]
        assert server["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
        assert server["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert server["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        sleep = int(server["lifecycle"]["preStop"]["sleep"]["seconds"])
        assert sleep == values["preStopSleepSeconds"]
        assert spec["terminationGracePeriodSeconds"] > sleep
        assert spec["securityContext"]["runAsUser"] == 1034
        env = {e["name"]: e["value"] for e in server["env"]}
        home = env["BENTOML_HOME"]
        assert home in {m["mountPath"] for m in server["volumeMounts"]}
        assert server["envFrom"] == [
            {
                "configMapRef": {
                    "name": r.one("ConfigMap", server["envFrom"][0]["configMapRef"]["name"])["metadata"][
                        "name"
                    ]
                }
            }
        ]
        assert re.fullmatch(r"[0-9a-f]{64}", pod["metadata"]["annotations"]["checksum/config"])


def test_service_settings_reach_the_pods_as_tabula_service_env(rendered: Render) -> None:
    config = rendered("default").one("ConfigMap", "tabula")["data"]
    assert config == {
        "TABULA_SERVICE_CONCURRENCY_LIMIT": "1024",
        "TABULA_SERVICE_ADMISSION_TARGET_SECONDS": "0.1",
        "TABULA_SERVICE_ADMISSION_WAIT_SECONDS": "0.1",
        "TABULA_SERVICE_ADMISSION_REFUSAL_SECONDS": "1.5",
        "TABULA_SERVICE_ADMISSION_ORDER": "lifo",
        "TABULA_SERVICE_ADMISSION_FAIR_SHARE": "true",
        "TABULA_SERVICE_GC_YOUNG_THRESHOLD": "10000",
        "TABULA_SERVICE_REQUEST_TIMEOUT_SECONDS": "2",
        "TABULA_SERVICE_MAX_BATCH_ROWS": "1000",
        "TABULA_SERVICE_MAX_REQUEST_BYTES": "1000000",
    }


def test_config_checksum_changes_with_the_config(helm: str) -> None:
    def checksum(*set_values: str) -> str:
        result = render([scenario_file("default")], list(set_values))
        assert result.returncode == 0, result.stderr
        deployment = next(d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum() != checksum("config.concurrencyLimit=64")
    assert checksum() == checksum("replicaCount=5")


@pytest.mark.parametrize("scenario", scenarios())
def test_images_are_pinned_never_latest(rendered: Render, scenario: str) -> None:
    images = [value for path, value in walk(rendered(scenario).objects) if path.endswith(".image")]
    assert images
    for image in images:
        repository, _, tag = str(image).split("@")[0].rpartition(":")
        assert repository, image
        assert tag not in ("", "latest"), image


@pytest.mark.parametrize("scenario", scenarios())
def test_replicas_are_left_to_the_hpa(rendered: Render, scenario: str) -> None:
    r = rendered(scenario)
    hpas = r.of_kind("HorizontalPodAutoscaler")
    if not r.values["autoscaling"]["enabled"]:
        assert not hpas
        assert all("replicas" in w["spec"] for w in serving_workloads(r))
        return
    (hpa,) = hpas
    ref = hpa["spec"]["scaleTargetRef"]
    target = r.one(ref["kind"], ref["name"])
    assert target["apiVersion"] == ref["apiVersion"]
    assert "replicas" not in target["spec"]
    others = [w for w in serving_workloads(r) if w is not target]
    assert all("replicas" in w["spec"] for w in others)
    metrics = {m["type"] for m in hpa["spec"]["metrics"]}
    assert "Resource" in metrics
    assert ("Pods" in metrics) == r.values["autoscaling"]["customMetric"]["enabled"]


def test_hpa_scenario_spreads_pods(rendered: Render) -> None:
    spec = rendered("hpa").one("Deployment")["spec"]["template"]["spec"]
    assert spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"
    assert rendered("hpa").one("PodDisruptionBudget")["spec"]["minAvailable"] == 2


def test_helm_test_pod_script_is_valid_python(rendered: Render) -> None:
    pod = rendered("default").one("Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python3", "-c"]
    compile(container["args"][0], "helm-test", "exec")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["URL"] == "http://tabula:3000"
    assert set(json.loads(env["GOLDEN_ROW"])) == {
        "MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude",
    }  # fmt: skip


# --- release strategies -------------------------------------------------------------------------------


def _analysis_ref(rollout: Manifest) -> dict[str, Any]:
    strategy = rollout["spec"]["strategy"]
    if "canary" in strategy:
        return dict(strategy["canary"]["analysis"])
    return dict(strategy["blueGreen"]["prePromotionAnalysis"])


@pytest.mark.parametrize("scenario", ["canary", "blue-green", "argo-canary-nginx"])
def test_argo_rollout_references_existing_services_and_templates(rendered: Render, scenario: str) -> None:
    r = rendered(scenario)
    rollout = r.one("Rollout")
    strategy = rollout["spec"]["strategy"]
    services = {s["metadata"]["name"] for s in r.of_kind("Service")}
    if "canary" in strategy:
        assert {strategy["canary"]["canaryService"], strategy["canary"]["stableService"]} <= services
    else:
        assert {strategy["blueGreen"]["activeService"], strategy["blueGreen"]["previewService"]} <= services
        assert strategy["blueGreen"]["autoPromotionEnabled"] is False
    ref = _analysis_ref(rollout)
    templates = {t["metadata"]["name"]: t for t in r.of_kind("AnalysisTemplate")}
    assert {t["templateName"] for t in ref["templates"]} == set(templates)
    # utils/analysis/factory.go (BuildArgumentsForRolloutAnalysisRun): Latest and Stable become the
    # rollouts-pod-template-hash of the newest and of the stable ReplicaSet.
    args = {a["name"]: a["valueFrom"] for a in ref["args"]}
    assert args == {
        "candidate-track": {"podTemplateHashValue": "Latest"},
        "stable-track": {"podTemplateHashValue": "Stable"},
    }
    for template in templates.values():
        declared = {a["name"] for a in template["spec"].get("args", [])}
        assert declared <= set(args)
        for metric in template["spec"]["metrics"]:
            used = set(re.findall(r"\{\{args\.([a-z-]+)\}\}", json.dumps(metric)))
            assert used <= declared, metric["name"]


def test_canary_analysis_checks_success_latency_and_shift(rendered: Render) -> None:
    template = rendered("canary").one("AnalysisTemplate", "tabula-analysis")
    metrics = {m["name"]: m for m in template["spec"]["metrics"] if "prometheus" in m["provider"]}
    assert set(metrics) == {"success-rate", "latency-p95", "prediction-shift"}
    analysis = rendered("canary").values["rollout"]["analysis"]
    for metric in metrics.values():
        assert metric["interval"] == analysis["interval"]
        assert metric["failureLimit"] == analysis["failureLimit"]
        assert "count" not in metric  # count 0 = background analysis until the rollout completes
        query = metric["provider"]["prometheus"]["query"]
        assert 'rollouts_pod_template_hash="{{args.candidate-track}}"' in query
        assert "model_version" not in query
    assert (
        'rollouts_pod_template_hash="{{args.stable-track}}"'
        in metrics["prediction-shift"]["provider"]["prometheus"]["query"]
    )
    assert (
        metrics["success-rate"]["successCondition"]
        == f"len(result) > 0 && result[0] >= {analysis['successRate']['min']}"
    )


def test_blue_green_analysis_has_a_finite_count(rendered: Render) -> None:
    template = rendered("blue-green").one("AnalysisTemplate")
    assert all(m["count"] == 3 for m in template["spec"]["metrics"] if "prometheus" in m["provider"])


def test_load_test_runs_as_analysis_job_and_helm_test(rendered: Render) -> None:
    r = rendered("canary")
    (job,) = _analysis_jobs(r.one("AnalysisTemplate", "tabula-loadtest"))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["tabula"]
    assert container["args"][0] == "loadtest"
    options = dict(arg.removeprefix("--").split("=", 1) for arg in container["args"][1:])
    assert options["url"] == "http://tabula-canary.prod.svc:3000"
    assert set(options) == {
        "url",
        "users",
        "spawn-rate",
        "run-time",
        "p95-ms",
        "p99-ms",
        "max-error-rate",
        "min-rps",
        "out",
    }
    assert container["image"].startswith("ghcr.io/tabula/tabula-training:")
    pods = [p for p in r.of_kind("Pod") if p["metadata"]["name"] == "tabula-test-load"]
    assert pods
    assert pods[0]["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert "--url=http://tabula:3000" in pods[0]["spec"]["containers"][0]["args"]
    assert not [p for p in rendered("default").of_kind("Pod") if "load" in p["metadata"]["name"]]


def test_argo_nginx_canary_routes_through_the_stable_ingress(rendered: Render) -> None:
    r = rendered("argo-canary-nginx")
    canary = r.one("Rollout")["spec"]["strategy"]["canary"]
    ingress = r.one("Ingress")
    assert canary["trafficRouting"]["nginx"]["stableIngress"] == ingress["metadata"]["name"]
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"]
    assert backend == canary["stableService"]
    assert ingress["spec"]["tls"][0]["secretName"] == "tabula-tls"


def _track(o: Manifest) -> str | None:
    track = o["spec"]["selector"].get("tabula.io/track")
    return None if track is None else str(track)


def test_native_canary_splits_by_replica_ratio(rendered: Render) -> None:
    r = rendered("native-canary")
    deployments = {_deployment_track(d): d for d in r.of_kind("Deployment")}
    assert set(deployments) == {"stable", "canary"}
    assert deployments["stable"]["spec"]["replicas"] == 3
    assert deployments["canary"]["spec"]["replicas"] == 1
    canary_image = deployments["canary"]["spec"]["template"]["spec"]["containers"][0]["image"]
    assert canary_image.endswith(":4-b2c3d4e")
    assert deployments["canary"]["spec"]["template"]["metadata"]["labels"]["tabula.io/model-version"] == "4"
    main = r.one("Service", "tabula")
    assert _track(main) is None  # both tracks behind one Service: 3:1 by replicas
    assert _track(r.one("Service", "tabula-canary")) == "canary"
    assert _track(r.one("Service", "tabula-stable")) == "stable"


def _deployment_track(d: Manifest) -> str:
    return str(d["spec"]["selector"]["matchLabels"]["tabula.io/track"])


def test_native_canary_ingress_weight(rendered: Render) -> None:
    r = rendered("native-canary-ingress")
    main, canary = r.one("Ingress", "tabula"), r.one("Ingress", "tabula-canary")
    backend = "spec.rules.0.http.paths.0.backend.service.name"

    def get(o: Manifest, path: str) -> Any:
        node: Any = o
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else node[part]
        return node

    assert get(main, backend) == "tabula-stable"
    assert get(canary, backend) == "tabula-canary"
    assert canary["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/canary": "true",
        "nginx.ingress.kubernetes.io/canary-weight": "20",
    }
    assert "annotations" not in main["metadata"]


def test_native_blue_green_switches_the_service_selector(rendered: Render) -> None:
    r = rendered("native-blue-green")
    deployments = {_deployment_track(d): d for d in r.of_kind("Deployment")}
    assert set(deployments) == {"blue", "green"}
    assert _track(r.one("Service", "tabula")) == "green"
    assert _track(r.one("Service", "tabula-preview")) == "blue"
    assert deployments["blue"]["spec"]["replicas"] == 1
    assert r.one("HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "tabula-green"
    images = {
        t: d["spec"]["template"]["spec"]["containers"][0]["image"].rsplit(":", 1)[1]
        for t, d in deployments.items()
    }
    assert images == {"blue": "3-a1b2c3d", "green": "4-b2c3d4e"}


def test_native_blue_green_refuses_an_active_colour_without_image(helm: str) -> None:
    result = render(
        [scenario_file("native-blue-green")],
        ["rollout.native.blueGreen.greenTag=", "rollout.native.blueGreen.activeColor=green"],
    )
    assert result.returncode != 0
    assert "no greenTag is set" in result.stderr


def test_service_monitor_attaches_the_track_labels(rendered: Render) -> None:
    monitor = rendered("canary").one("ServiceMonitor")
    assert monitor["spec"]["podTargetLabels"] == ["rollouts-pod-template-hash", "tabula.io/track"]


def test_values_no_longer_take_a_stable_model_version(helm: str) -> None:
    result = render([scenario_file("canary")], ["rollout.analysis.stableModelVersion=3"])
    assert result.returncode != 0
    assert "stableModelVersion" in result.stderr


@pytest.mark.parametrize(
    ("scenario", "kind", "hash_label"),
    [
        ("hpa", "Deployment", "pod-template-hash"),
        ("canary", "Rollout", "rollouts-pod-template-hash"),
        ("native-canary", "Deployment", "pod-template-hash"),
    ],
)
def test_topology_spread_keys_on_the_hash_label_the_pods_carry(
    helm: str, scenario: str, kind: str, hash_label: str
) -> None:
    """Deployment pods carry pod-template-hash; Argo's pods carry rollouts-pod-template-hash instead."""
    result = render([scenario_file(scenario)], ["topologySpread.enabled=true"])
    assert result.returncode == 0, result.stderr
    workloads = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == kind]
    assert workloads
    for workload in workloads:
        (constraint,) = workload["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert constraint["matchLabelKeys"] == [hash_label]


# --- monitoring -----------------------------------------------------------------------------------------


def contract_metrics() -> set[str]:
    """Metric names of the service's contract (docs/architecture.md), with histogram series suffixes."""
    text = (REPO_ROOT / "docs" / "architecture.md").read_text()
    names: set[str] = set()
    for name, kind in re.findall(r"^\| `(tabula_[a-z_]+)` \| (\w+)", text, flags=re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    assert "tabula_http_requests_total" in names
    return names


def promql_of(r: Rendered) -> list[str]:
    queries = [rule["expr"] for group in r.one("PrometheusRule")["spec"]["groups"] for rule in group["rules"]]
    for template in r.of_kind("AnalysisTemplate"):
        queries += [
            m["provider"]["prometheus"]["query"]
            for m in template["spec"]["metrics"]
            if "prometheus" in m["provider"]
        ]
    dashboard = next(c for c in r.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard"))
    panels = json.loads(dashboard["data"]["tabula.json"])["panels"]
    queries += [t["expr"] for p in panels for t in p.get("targets", [])]
    return queries


@pytest.mark.parametrize("scenario", ["canary", "blue-green"])
def test_promql_uses_only_contract_metric_names(rendered: Render, scenario: str) -> None:
    allowed = contract_metrics() | {"kube_pod_container_status_restarts_total", "ALERTS"}
    for query in promql_of(rendered(scenario)):
        used = set(re.findall(r"\b(tabula_[a-z_]+|kube_[a-z_]+)\b(?!\s*(?:=|!=|=~|!~)\s*\")", query))
        assert used, query
        assert used <= allowed, f"unknown metrics {used - allowed} in {query}"
        assert 'job="tabula-metrics"' in query or "kube_pod" in query, query


def test_alerts_cover_the_slos(rendered: Render) -> None:
    rules = [rule for g in rendered("default").one("PrometheusRule")["spec"]["groups"] for rule in g["rules"]]
    assert {r["alert"] for r in rules} == {
        "TabulaErrorBudgetBurn",
        "TabulaLatencyHigh",
        "TabulaFeatureDrift",
        "TabulaInputOutOfRange",
        "TabulaNoPredictions",
        "TabulaPodRestarts",
    }
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])


def test_dashboard_is_picked_up_by_the_grafana_sidecar(rendered: Render) -> None:
    dashboard = rendered("default").one("ConfigMap", "tabula-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(dashboard["data"]["tabula.json"])
    titles = " ".join(p["title"].lower() for p in board["panels"])
    for topic in ("requests", "error", "latency", "prediction", "drift"):
        assert topic in titles
    targets = [t for p in board["panels"] for t in p.get("targets", [])]
    assert targets
    assert all("model_version" in t["expr"] for t in targets)
    assert all("{{model_version}}" in t["legendFormat"] for t in targets)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))


# --- training ----------------------------------------------------------------------------------------


def test_training_job_and_cronjob(rendered: Render) -> None:
    r = rendered("training-cronjob")
    job, cron = r.one("Job"), r.one("CronJob")
    values = r.values["training"]
    assert job["metadata"]["name"] == "tabula-train"
    for spec, args in (
        (job["spec"], ["train"]),
        (cron["spec"]["jobTemplate"]["spec"], ["train", "--if-changed"]),
    ):
        assert spec["backoffLimit"] == values["backoffLimit"]
        assert spec["activeDeadlineSeconds"] == values["activeDeadlineSeconds"]
        assert spec["ttlSecondsAfterFinished"] == values["ttlSecondsAfterFinished"]
        pod = spec["template"]["spec"]
        assert pod["serviceAccountName"] == "tabula-training"
        (container,) = pod["containers"]
        assert container["command"] == ["tabula"]
        assert container["args"] == args
        assert container["envFrom"] == [{"configMapRef": {"name": "tabula-training"}}]
        for env in container["env"]:
            if env["name"].startswith("MLFLOW_"):
                assert "value" not in env, "credentials only by Secret reference"
                assert env["valueFrom"]["secretKeyRef"]["name"] == "mlflow-credentials"
    assert cron["spec"]["schedule"] == "0 2 * * 0"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    config = r.one("ConfigMap", "tabula-training")["data"]
    assert config["MLFLOW_TRACKING_URI"] == "http://mlflow.mlops.svc:5000"
    assert config["TABULA_MODEL_NAME"] == "housing-price"
    assert config["TABULA_MODEL_FAMILY"] == "hist_gradient_boosting"
    binding = r.one("RoleBinding")
    assert binding["subjects"][0]["name"] == "tabula-training"
    assert binding["roleRef"]["name"] == r.one("Role")["metadata"]["name"]
