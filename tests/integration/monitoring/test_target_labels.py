"""The chart's queries survive a Prometheus that overrides honor_labels (REAL Prometheus, REAL exporter).

The prometheus-operator sets `honor_labels: false` on every scrape when the Prometheus resource has
`overrideHonorLabels` (prometheus-operator pkg/prometheus/promcfg.go, AddHonorLabels). Then a scraped
label that collides with a target label is renamed `exported_<name>` (Prometheus' scrape config docs,
honor_labels). The targets here carry the labels the operator attaches for the chart's ServiceMonitor,
including `endpoint` (the port name) and the track's `rollouts_pod_template_hash`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, start_http_server

from release.evidence import fill
from service.metrics import ServiceMetrics
from tests.chart.helm import render_scenario
from tests.support import free_port, prometheus_server

pytestmark = pytest.mark.integration

TRACK = "6d4cf56db6"


def query(prometheus: str, promql: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=10).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """The service's metrics and a counter with the former `endpoint` label, scraped with honor_labels off."""
    chart = render_scenario("canary")
    monitor = chart.one("ServiceMonitor")
    (namespace,) = monitor["spec"]["namespaceSelector"]["matchNames"]
    spec = json.loads(chart.one("ConfigMap", "tabula-analysis")["data"]["analysis.json"])
    registry = CollectorRegistry()
    metrics = ServiceMetrics(chart.values["model"]["name"], "4", "run4", registry)
    former = Counter("former_requests_total", "Requests as labelled before.", ["endpoint"], registry=registry)
    for _ in range(50):
        metrics.observe_request("/predict", 200, 0.004)
        metrics.observe_predictions("/predict", [2.0])
        former.labels(endpoint="/predict").inc()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    # What the operator attaches for the chart's ServiceMonitor: job, namespace, pod, endpoint = port name.
    labels = {
        "namespace": namespace,
        "pod": "tabula-6d4cf56db6-abcde",
        "endpoint": monitor["spec"]["endpoints"][0]["port"],
        spec["trackLabel"]: TRACK,
    }
    scrape = {
        "job_name": "tabula-metrics",
        "honor_labels": False,
        "static_configs": [{"targets": [f"127.0.0.1:{port}"], "labels": labels}],
    }
    try:
        with prometheus_server(tmp_path_factory.mktemp("honor") / "prometheus", [scrape]) as url:
            deadline = time.monotonic() + 30
            # Three scrapes, so that increase() over the range has samples to compare.
            while time.monotonic() < deadline:
                if query(url, "count_over_time(tabula_model_info[1m]) >= 3"):
                    break
                time.sleep(0.5)
            yield url, spec
    finally:
        server.shutdown()
        thread.join(5)


def test_route_is_untouched_without_honor_labels(scraped: tuple[str, dict[str, Any]]) -> None:
    prometheus, spec = scraped
    series = query(prometheus, 'tabula_http_requests_total{route="/predict"}')
    assert len(series) == 1
    assert series[0]["metric"]["endpoint"] == "http"  # the operator's target label, beside ours
    evidence = fill(spec["evidence"]["requestsQuery"], {"track": TRACK, "range": "5m"})
    assert query(prometheus, evidence), evidence


def test_the_former_endpoint_label_was_renamed_away(scraped: tuple[str, dict[str, Any]]) -> None:
    """Why `endpoint` had to go: selecting it finds the port name, the service's value is elsewhere."""
    prometheus, _ = scraped
    assert not query(prometheus, 'former_requests_total{endpoint=~"/predict.*"}')
    assert query(prometheus, 'former_requests_total{exported_endpoint="/predict"}')
