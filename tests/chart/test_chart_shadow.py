"""The chart's shadow track (rollout.shadow): objects, isolation from live traffic, and its PromQL.

Queries are judged with promtool on synthetic series labelled as Prometheus labels the shadow's pods
(job `<fullname>-shadow-metrics`, target label `tabula_io_track="shadow"`), in the style of
test_chart_rules.py: each analysis metric becomes an alert that fires while it would pass.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import NAMESPACE, Manifest, Rendered, render, scenario_file
from tests.chart.test_chart_rules import (
    EVAL,
    LATENCY_BUCKETS,
    Series,
    counter,
    fill_args,
    firing,
    pass_alert,
    promtool,
    run_promtool_test,
)

pytestmark = pytest.mark.chart

SHADOW_JOB = "tabula-shadow-metrics"
SHADOW_VERSION = "5"
ARGS = {"candidate-track": "shadow", "stable-track": "unused", "track": "shadow", "range": "420s"}
ABS_BUCKETS = ("0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf")
PAIRS_PER_MINUTE = 600
CONDITION = r"len\(result\) > 0 && result\[0\] (<=) ([0-9.eE+-]+)"


def rendered_with(scenario: str, *settings: str) -> Rendered:
    result = render([scenario_file(scenario)], list(settings))
    assert result.returncode == 0, result.stderr
    return Rendered(scenario, [doc for doc in yaml.safe_load_all(result.stdout) if doc])


def pod_template(rendered: Rendered) -> Manifest:
    workload = next(
        o
        for o in rendered.objects
        if o["kind"] in {"Rollout", "Deployment"} and o["metadata"]["name"] == "tabula"
    )
    template: Manifest = workload["spec"]["template"]
    return template


def mounts_mirror(template: Manifest) -> bool:
    return any(v["name"] == "mirror" for v in template["spec"]["volumes"])


def test_off_by_default_nothing_of_the_shadow_is_rendered() -> None:
    rendered = rendered_with("canary")
    names = {o["metadata"]["name"] for o in rendered.objects}
    assert not {n for n in names if "shadow" in n or "mirror" in n}
    assert not mounts_mirror(pod_template(rendered))
    rules = rendered.one("PrometheusRule")["spec"]["groups"]
    assert "TabulaShadowDrifting" not in {r.get("alert") for g in rules for r in g["rules"]}


@pytest.mark.parametrize("provider", ["argo", "native"])
def test_starting_and_stopping_a_shadow_leaves_the_stable_pods_untouched(provider: str) -> None:
    """Only the mirror ConfigMap changes: its mounted file is what the stable pods re-read."""
    base = ("rollout.shadow.enabled=true", f"rollout.provider={provider}", "rollout.analysis.count=3")
    idle = rendered_with("canary", *base)
    running = rendered_with("canary", *base, "rollout.shadow.tag=5-c3d4e5f")
    assert pod_template(idle) == pod_template(running)
    assert mounts_mirror(pod_template(idle))
    env = {e["name"]: e.get("value") for e in pod_template(idle)["spec"]["containers"][0]["env"]}
    assert env["TABULA_SERVICE_SHADOW_CONTROL_FILE"] == "/etc/tabula/mirror/mirror.json"
    controls = [
        json.loads(r.one("ConfigMap", "tabula-mirror")["data"]["mirror.json"]) for r in (idle, running)
    ]
    assert controls == [
        {"url": f"http://tabula-shadow.{NAMESPACE}.svc:3000", "sampleRate": 0},
        {"url": f"http://tabula-shadow.{NAMESPACE}.svc:3000", "sampleRate": 1},
    ]
    assert not [o for o in idle.of_kind("Deployment") if o["metadata"]["name"] == "tabula-shadow"]


def selects(service: Manifest, labels: dict[str, str]) -> bool:
    selector: dict[str, str] = service["spec"].get("selector") or {}
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("provider", ["argo", "native"])
@pytest.mark.parametrize("strategy", ["canary", "blueGreen"])
def test_the_shadow_track_gets_no_live_traffic_and_never_mirrors(provider: str, strategy: str) -> None:
    rendered = rendered_with(
        "shadow", f"rollout.provider={provider}", f"rollout.strategy={strategy}", "rollout.analysis.count=3"
    )
    shadow = rendered.one("Deployment", "tabula-shadow")
    labels = shadow["spec"]["template"]["metadata"]["labels"]
    assert labels["tabula.io/track"] == "shadow"
    assert labels["app.kubernetes.io/component"] == "shadow"
    assert labels["tabula.io/model-version"] == SHADOW_VERSION
    assert not mounts_mirror(shadow["spec"]["template"])
    # Only the shadow's pods treat marked requests as copies; on serving pods the mark only stops mirroring.
    shadow_env = {
        e["name"]: e.get("value") for e in shadow["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert shadow_env["TABULA_SERVICE_SHADOW_TRACK"] == "true"
    for workload in rendered.objects:
        if workload["kind"] in {"Rollout", "Deployment"} and workload is not shadow:
            serving = workload["spec"]["template"]["spec"]["containers"][0]["env"]
            assert "TABULA_SERVICE_SHADOW_TRACK" not in {e["name"] for e in serving}
            assert mounts_mirror(workload["spec"]["template"])
    assert {s["metadata"]["name"] for s in rendered.of_kind("Service") if selects(s, labels)} == {
        "tabula-shadow",
        SHADOW_JOB,
    }
    for kind in ("PodDisruptionBudget", "HorizontalPodAutoscaler"):
        for obj in rendered.of_kind(kind):
            selector = obj["spec"].get("selector", {}).get("matchLabels", {})
            assert not selector or not all(labels.get(k) == v for k, v in selector.items())
    assert (
        rendered.one("Service", SHADOW_JOB)["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    )
    # The serving pods may send their copies to the shadow's pods, and only there beyond DNS.
    policy = rendered.one("NetworkPolicy", "tabula")
    targets = [
        peer["podSelector"]["matchLabels"] for rule in policy["spec"]["egress"] for peer in rule.get("to", [])
    ]
    assert targets == [
        {
            "app.kubernetes.io/name": "tabula",
            "app.kubernetes.io/instance": "tabula",
            "app.kubernetes.io/component": "shadow",
        }
    ]
    rendered.one("NetworkPolicy", "tabula-shadow")


# --- the shadow's PromQL, on synthetic series ----------------------------------------------------


class ShadowSeries(Series):
    def __init__(self) -> None:
        super().__init__(SHADOW_JOB, "housing-price", "tabula_io_track")

    def shadow(
        self,
        *,
        abs_bucket: str = "0.001",
        errors: float = 0.0,
        latency_bucket: str = "0.05",
        swaps: dict[tuple[str, str], float] | None = None,
        pairs: int = PAIRS_PER_MINUTE,
        version: str = SHADOW_VERSION,
    ) -> None:
        """A shadow answering ``pairs`` copies a minute; each |difference| falls in ``abs_bucket``."""
        v = {"model_version": version, "tabula_io_track": "shadow"}
        failed = round(pairs * errors)
        paired = pairs - failed
        self.add(
            "tabula_shadow_requests_total", v | {"route": "/predict", "status_code": "200"}, counter(paired)
        )
        if failed:
            self.add(
                "tabula_shadow_requests_total",
                v | {"route": "/predict", "status_code": "503"},
                counter(failed),
            )
        reached = False
        for le in LATENCY_BUCKETS:
            reached = reached or le == latency_bucket
            self.add(
                "tabula_shadow_request_duration_seconds_bucket",
                v | {"route": "/predict", "le": le},
                counter(pairs if reached else 0),
            )
        self.add("tabula_shadow_pairs_total", v, counter(paired))
        reached = False
        for le in ABS_BUCKETS:
            reached = reached or le == abs_bucket
            self.add("tabula_shadow_abs_difference_bucket", v | {"le": le}, counter(paired if reached else 0))
        for (champion, shadow), share in (swaps or {}).items():
            classes = v | {"champion_class": champion, "shadow_class": shadow}
            self.add("tabula_shadow_disagreements_total", classes, counter(paired * share))


def shadow_spec(rendered: Rendered) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(
        rendered.one("ConfigMap", "tabula-shadow-analysis")["data"]["analysis.json"]
    )
    return spec


def analysis_rules(rendered: Rendered, directory: Path) -> tuple[Path, list[str]]:
    rules, names = [], []
    for metric in shadow_spec(rendered)["metrics"]:
        condition = re.fullmatch(
            r"len\(result\) > 0 && result\[0\] (<=) ([0-9.eE+-]+)", metric["successCondition"]
        )
        assert condition, metric["successCondition"]
        query = fill_args(metric["query"], ARGS).strip()
        rules.append(
            {"alert": pass_alert(metric["name"]), "expr": f"({query}) {condition[1]} {condition[2]}"}
        )
        names.append(metric["name"])
    path = directory / "shadow-analysis.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "shadow", "rules": rules}]}, sort_keys=False))
    return path, names


def passing(metrics: list[str], failing: set[str]) -> list[dict[str, Any]]:
    return [
        {
            "expr": f'count(ALERTS{{alertname="{pass_alert(m)}", alertstate="firing"}})',
            "eval_time": EVAL,
            "exp_samples": [] if m in failing else [{"labels": "{}", "value": 1}],
        }
        for m in metrics
    ]


REGRESSION_CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "identical": ({}, set()),
    "shifted": ({"abs_bucket": "1"}, {"shadow-difference-p95"}),
    "erroring": ({"errors": 0.05}, {"shadow-error-rate"}),
    "slow": ({"latency_bucket": "1"}, {"shadow-latency-p95"}),
    "no pairs": ({"pairs": 0}, {"shadow-difference-p95", "shadow-error-rate", "shadow-latency-p95"}),
}


@pytest.mark.parametrize("case", list(REGRESSION_CASES))
def test_the_shadow_analysis_judges_a_regression_shadow(tmp_path: Path, case: str) -> None:
    behaviour, failing = REGRESSION_CASES[case]
    rules, metrics = analysis_rules(rendered_with("shadow"), tmp_path)
    assert set(metrics) == {"shadow-difference-p95", "shadow-error-rate", "shadow-latency-p95"}
    series = ShadowSeries()
    series.shadow(**behaviour)
    run_promtool_test(tmp_path, rules, series, passing(metrics, failing))


CLASSIFICATION_CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "agreeing, no disagreement series at all": ({}, set()),
    "rare disagreements": ({"swaps": {("setosa", "versicolor"): 0.01}}, set()),
    "two classes swapped": (
        {"swaps": {("versicolor", "virginica"): 0.3, ("virginica", "versicolor"): 0.3}},
        {"shadow-disagreement"},
    ),
    "no pairs": ({"pairs": 0}, {"shadow-disagreement", "shadow-error-rate", "shadow-latency-p95"}),
}


@pytest.mark.parametrize("case", list(CLASSIFICATION_CASES))
def test_the_shadow_analysis_rejects_a_classifier_that_swaps_two_classes(tmp_path: Path, case: str) -> None:
    behaviour, failing = CLASSIFICATION_CASES[case]
    rendered = rendered_with("shadow", "model.task=classification")
    rules, metrics = analysis_rules(rendered, tmp_path)
    assert set(metrics) == {"shadow-disagreement", "shadow-error-rate", "shadow-latency-p95"}
    series = ShadowSeries()
    series.shadow(**behaviour)
    run_promtool_test(tmp_path, rules, series, passing(metrics, failing))


def test_the_evidence_counts_the_shadows_pairs(tmp_path: Path) -> None:
    spec = shadow_spec(rendered_with("shadow"))
    assert (spec["trackLabel"], spec["evidence"]["minRequests"]) == ("tabula_io_track", 200)
    query = fill_args(spec["evidence"]["requestsQuery"], ARGS)
    rules = tmp_path / "evidence.yaml"
    rules.write_text(
        yaml.safe_dump({"groups": [{"name": "e", "rules": [{"record": "pairs", "expr": query}]}]})
    )
    series = ShadowSeries()
    series.shadow()
    check = {
        "expr": "pairs",
        "eval_time": EVAL,
        "exp_samples": [{"labels": "pairs", "value": 7 * PAIRS_PER_MINUTE}],
    }
    run_promtool_test(tmp_path, rules, series, [check])


@pytest.mark.parametrize(
    ("task", "behaviour"),
    [("regression", {"abs_bucket": "1"}), ("classification", {"swaps": {("versicolor", "virginica"): 0.5}})],
)
def test_the_drift_alert_fires_for_a_drifting_shadow_only(
    tmp_path: Path, task: str, behaviour: dict[str, Any]
) -> None:
    rendered = rendered_with("shadow", f"model.task={task}")
    rules = tmp_path / "alerts.yaml"
    groups = [g for g in rendered.one("PrometheusRule")["spec"]["groups"] if g["name"].endswith(".shadow")]
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    series = ShadowSeries()
    series.shadow(version="6", **behaviour)
    series.shadow(version=SHADOW_VERSION)
    by = "model_version"
    run_promtool_test(tmp_path, rules, series, [firing("TabulaShadowDrifting", by, [{"model_version": "6"}])])


def test_promtool_checks_every_shadow_query(tmp_path: Path) -> None:
    rendered = rendered_with("shadow")
    queries = [r["expr"] for g in rendered.one("PrometheusRule")["spec"]["groups"] for r in g["rules"]]
    spec = shadow_spec(rendered)
    queries += [fill_args(m["query"], ARGS) for m in spec["metrics"]] + [
        fill_args(spec["evidence"]["requestsQuery"], ARGS)
    ]
    dashboard = json.loads(rendered.one("ConfigMap", "tabula-dashboard")["data"]["tabula.json"])
    shadow_panels = [
        t["expr"]
        for p in dashboard["panels"]
        for t in p.get("targets", [])
        if "_shadow_" in t["expr"] or "_mirror_" in t["expr"]
    ]
    assert len(shadow_panels) == 8
    assert all(SHADOW_JOB in expr or "tabula-metrics" in expr for expr in shadow_panels)
    queries += [expr.replace("$__rate_interval", "1m") for expr in shadow_panels]
    rules = [{"record": f"tabula:check_{i}", "expr": q} for i, q in enumerate(queries)]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "q", "rules": rules}]}, sort_keys=False))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
