"""Every label the chart's PromQL uses means one thing: a label the service emits, or a target label.

The prometheus-operator attaches its own target labels to every series a ServiceMonitor scrapes
(prometheus-operator `pkg/prometheus/promcfg.go`, `generateServiceMonitorConfig`: `node`, `pod`,
`namespace`, `service`, `container`, `job`, `endpoint`, then `podTargetLabels`; Prometheus adds
`instance`). A service label of the same name survives only while `honorLabels` is true: a Prometheus
with `overrideHonorLabels` keeps the target's value and renames the service's to `exported_<name>`, and
every query selecting it comes back empty. That is how the service's former `endpoint` label broke.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from service.metrics import ServiceMetrics
from service.shadow import MirrorMetrics, Pairing, ShadowComparison, ShadowMetrics
from tests.chart.helm import Rendered

pytestmark = pytest.mark.chart

Render = Callable[[str], Rendered]
OPERATOR_TARGET_LABELS = frozenset(
    {"node", "pod", "namespace", "service", "container", "job", "endpoint", "instance"}
)
SCENARIOS = ("canary", "blue-green", "native-canary", "native-blue-green", "shadow")
# Metrics of other exporters (kube-state-metrics), whose labels are theirs, not the service's.
FOREIGN_METRICS = re.compile(r"\bkube_[a-z_]+")
MATCHER = re.compile(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
LEGEND = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")


def service_labels() -> set[str]:
    """Label names of every series the service exports, with every metric exercised once."""
    registry = CollectorRegistry()
    metrics = ServiceMetrics("housing-price", "4", "run123", registry=registry)
    metrics.observe_request("/predict", 200, 0.002)
    metrics.observe_predictions("/predict", [1.5])
    metrics.count_out_of_range("MedInc")
    metrics.set_drift({"MedInc": 0.3})
    metrics.count_dropped("database")
    metrics.count_shed("concurrency")
    labels = metrics.model_labels
    shadow = ShadowComparison(ShadowMetrics(labels, registry), logging.getLogger(__name__), log_pairs=False)
    shadow.metrics.observe_request("/predict", 200, 0.002)
    shadow._record(Pairing(1, abs_differences=(0.1,), rel_differences=(0.05,), swaps=(("a", "b"),)))
    shadow._record(Pairing(0, unpaired="count_mismatch"))
    mirror = MirrorMetrics(labels, registry)
    mirror.sent()
    mirror.dropped("queue_full")
    names = {label for family in registry.collect() for sample in family.samples for label in sample.labels}
    assert {"model_name", "model_version", "status_code", "le", "feature"} <= names
    return names


def scrape_target_labels(r: Rendered) -> set[str]:
    """Target labels the chart's ServiceMonitor makes Prometheus attach and the queries may select on."""
    monitor = r.one("ServiceMonitor")
    pod_labels = {re.sub(r"[^a-zA-Z0-9_]", "_", label) for label in monitor["spec"]["podTargetLabels"]}
    return {"job", "namespace"} | pod_labels


def labels_used(promql: str) -> set[str]:
    """Label names a query matches, groups or joins on."""
    used = set(MATCHER.findall(promql))
    for group in GROUPING.findall(promql):
        used |= {name.strip() for name in group.split(",") if name.strip()}
    return used


def chart_queries(r: Rendered) -> list[tuple[str, str]]:
    """(where, PromQL or legend) of every alert, analysis query and dashboard panel the chart renders."""
    found = [
        (f"rule {rule['alert']}", rule["expr"])
        for group in r.one("PrometheusRule")["spec"]["groups"]
        for rule in group["rules"]
    ]
    for template in r.of_kind("AnalysisTemplate"):
        found += [
            (f"analysis {m['name']}", m["provider"]["prometheus"]["query"])
            for m in template["spec"]["metrics"]
            if "prometheus" in m["provider"]
        ]
    for config in r.of_kind("ConfigMap"):
        if "analysis.json" in config.get("data", {}):
            spec = json.loads(config["data"]["analysis.json"])
            found += [(f"native analysis {m['name']}", m["query"]) for m in spec["metrics"]]
            found.append(("evidence", spec["evidence"]["requestsQuery"]))
    dashboard = next(c for c in r.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-dashboard"))
    for panel in json.loads(dashboard["data"]["tabula.json"])["panels"]:
        for target in panel.get("targets", []):
            found.append((f"panel {panel['title']}", target["expr"]))
            legend = target.get("legendFormat", "")
            found.append((f"legend of {panel['title']}", " ".join(f'{n}="' for n in LEGEND.findall(legend))))
    return found


def misread_labels(promql: str, emitted: set[str], attached: set[str]) -> set[str]:
    """Labels of a query that are not unambiguously a service label or a target label of the scrape.

    A service label named like an operator target label counts as misread: whether the query sees the
    service's value depends on Prometheus' honor-labels setting.
    """
    usable = (emitted - OPERATOR_TARGET_LABELS) | attached | {"__name__"}
    return labels_used(promql) - usable


def test_service_labels_never_collide_with_operator_target_labels() -> None:
    assert not service_labels() & OPERATOR_TARGET_LABELS


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_queries_select_each_label_from_one_source(rendered: Render, scenario: str) -> None:
    r = rendered(scenario)
    emitted, attached = service_labels(), scrape_target_labels(r)
    assert not emitted & attached, f"labels both emitted and attached: {emitted & attached}"
    queries = [(where, q) for where, q in chart_queries(r) if not FOREIGN_METRICS.search(q)]
    assert len(queries) > 20, queries
    problems = [
        f"{where}: {sorted(misread)}"
        for where, promql in queries
        if (misread := misread_labels(promql, emitted, attached))
    ]
    assert not problems, "\n".join(problems)


def test_the_check_catches_the_former_endpoint_label(rendered: Render) -> None:
    """The service used to emit `endpoint`; the operator sets `endpoint` to the port name."""
    emitted = service_labels() - {"route"} | {"endpoint"}
    attached = scrape_target_labels(rendered("canary"))
    old_panel = 'sum by (model_version, endpoint) (rate(tabula_predictions_total{job="x"}[1m]))'
    old_rule = 'rate(tabula_http_requests_total{job="x", endpoint=~"/predict.*"}[5m])'
    assert misread_labels(old_panel, emitted, attached) == {"endpoint"}
    assert misread_labels(old_rule, emitted, attached) == {"endpoint"}
    assert not misread_labels(old_rule.replace("endpoint", "route"), service_labels(), attached)
