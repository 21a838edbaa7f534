"""The chart's canary analysis and dashboard queries against a real Prometheus scraping real services.

Prometheus (Debian's binary) scrapes three `bentoml serve` instances every second, labelled as the
chart's ServiceMonitor labels the pods: a stable version, a canary that is the same model under another
version, and a canary fitted on prices shifted by $100k. Locust loads all three. The queries come from
`helm template` of the canary scenario: nothing here repeats the chart's PromQL.
"""

from __future__ import annotations

import json
import math
import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from load.config import LoadSettings
from load.runner import LoadSummary, run_load_test
from release.analysis import assess
from tests.chart.helm import Rendered, render_scenario
from tests.integration.reliability.harness import (
    ModelVersions,
    payload_rows,
    record_figures,
    register_versions,
    serving_all,
)
from tests.support import Server, prometheus_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIO = "canary"
SHIFT = 1.0  # $100k: the shifted canary's prices
LOAD_SECONDS = 30
# Grafana's $__rate_interval is at least four scrape intervals; the scrape interval here is 1s.
RATE_INTERVAL = "10s"
# Prediction requests the stable server holds at once: more are shed, so the shed and 5xx panels get data.
HELD = 4


@dataclass(frozen=True)
class AnalysisMetric:
    name: str
    query: str
    success_condition: str

    def judge(self, result: list[float]) -> bool:
        """Argo's verdict on the vector, by the release loop's evaluator of the chart's conditions."""
        return assess(self.success_condition, result) == "Successful"


@dataclass(frozen=True)
class Fleet:
    prometheus: str
    versions: ModelVersions
    servers: dict[str, Server]
    load: dict[str, LoadSummary]
    # Unix time the queries are evaluated at: while every server is under load, after the shed burst
    # was scraped. Evaluated when each test runs instead, a slow CI machine let the 10 s rate windows
    # of the dashboard slide past the end of the load, and they came back empty.
    loaded_at: float


@pytest.fixture(scope="module")
def chart() -> Rendered:
    return render_scenario(SCENARIO)


def analysis_metrics(chart: Rendered) -> list[AnalysisMetric]:
    return [
        AnalysisMetric(metric["name"], metric["provider"]["prometheus"]["query"], metric["successCondition"])
        for template in chart.of_kind("AnalysisTemplate")
        for metric in template["spec"]["metrics"]
        if "prometheus" in metric["provider"]
    ]


def dashboard_panels(chart: Rendered) -> list[tuple[str, str]]:
    dashboard_map = next(m for m in chart.of_kind("ConfigMap") if "tabula.json" in m.get("data", {}))
    dashboard = json.loads(dashboard_map["data"]["tabula.json"])
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def scrape_config(chart: Rendered, targets: dict[str, str]) -> dict[str, Any]:
    """The scrape the chart's ServiceMonitor asks of the Prometheus Operator, as a static config.

    job is the metrics Service's name, namespace its namespace, and each role stands for a pod whose
    rollouts-pod-template-hash (podTargetLabels, sanitised as the operator does) is the role's name.
    """
    monitor = chart.one("ServiceMonitor")
    endpoint = monitor["spec"]["endpoints"][0]
    metrics_service = next(
        s
        for s in chart.of_kind("Service")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    )
    assert monitor["spec"]["selector"]["matchLabels"].items() <= metrics_service["metadata"]["labels"].items()
    (namespace,) = monitor["spec"]["namespaceSelector"]["matchNames"]
    label_name = re.sub(r"[^a-zA-Z0-9_]", "_", monitor["spec"]["podTargetLabels"][0])
    assert label_name == "rollouts_pod_template_hash"
    return {
        "job_name": metrics_service["metadata"]["name"],
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "metrics_path": endpoint["path"],
        "honor_labels": endpoint["honorLabels"],
        "static_configs": [
            {
                "targets": [url.removeprefix("http://")],
                "labels": {"namespace": namespace, "pod": f"tabula-{role}", label_name: role},
            }
            for role, url in targets.items()
        ],
    }


def query(prometheus: str, promql: str, at: float) -> list[dict[str, Any]]:
    params: dict[str, str | float] = {"query": promql, "time": at}
    response = httpx.get(f"{prometheus}/api/v1/query", params=params, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "success", body
    assert body["data"]["resultType"] == "vector", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def values(result: list[dict[str, Any]]) -> list[float]:
    return [float(sample["value"][1]) for sample in result]


def with_args(metric: AnalysisMetric, canary: str, stable: str) -> str:
    arguments = {"candidate-track": canary, "stable-track": stable}
    return re.sub(r"\{\{args\.([a-z-]+)\}\}", lambda m: arguments[m.group(1)], metric.query)


def shed_burst(stable: Server, held: int) -> list[int]:
    """Requests beyond the ``held`` the stable server holds at once are shed with 503.

    ``held`` batches send their headers and half their body first: admission counts a request from its
    headers (service/admission.py), so the worker holds them however fast it answers the rest, and the
    burst is shed on a loaded runner too (32 full batches from 16 threads once all got 200 there). The
    held batches then send the rest and are answered; their statuses come last.
    """
    body = json.dumps({"rows": payload_rows()[:100]}).encode()
    url = httpx.URL(stable.base_url)
    head = (
        f"POST /predict/batch HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    half = len(body) // 2
    with ExitStack() as stack:
        connections = [
            stack.enter_context(socket.create_connection((url.host, url.port), timeout=10))
            for _ in range(held)
        ]
        for connection in connections:
            connection.sendall(head + body[:half])
        burst = [
            httpx.post(
                f"{stable.base_url}/predict/batch", content=body, headers={"content-type": "application/json"}
            ).status_code
            for _ in range(8)
        ]
        for connection in connections:
            connection.sendall(body[half:])
        answers = [connection.makefile("rb").readline() for connection in connections]
    return [*burst, *(int(answer.split()[1]) for answer in answers)]


def out_of_range(server_: Server) -> int:
    row = {**payload_rows()[0], "AveOccup": 900.0}
    return httpx.post(f"{server_.base_url}/predict", json=row, timeout=10).status_code


@pytest.fixture(scope="module")
def fleet(chart: Rendered, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    versions = register_versions(root, {"stable": 0.0, "canary": 0.0, "shifted": SHIFT})
    with ExitStack() as stack:
        # Every server lowers the drift gauge's update interval to the scrape interval; the stable one
        # admits few requests at once, so the shed and 5xx panels get data.
        common = {"log_predictions": "false", "drift_update_seconds": "1"}
        settings = dict.fromkeys(versions.tags, common) | {
            "stable": common | {"concurrency_limit": str(HELD)}
        }
        servers = stack.enter_context(serving_all(versions.tags, versions.bentoml_home, root, settings))
        targets = {role: running.base_url for role, running in servers.items()}
        scrapes = [scrape_config(chart, targets)]
        prometheus = stack.enter_context(prometheus_server(root / "prometheus", scrapes))
        load: dict[str, LoadSummary] = {}

        def run(role: str) -> None:
            settings = LoadSettings(
                url=servers[role].base_url,  # type: ignore[arg-type]  # pydantic parses the URL
                users=2,
                spawn_rate=2,
                run_time=f"{LOAD_SECONDS}s",
                wait_min_s=0.02,
                wait_max_s=0.1,
                p95_ms=5000,
                p99_ms=10000,
                max_error_rate=1.0,
                out=root / f"locust-{role}",
            )
            load[role] = run_load_test(settings)

        threads = [threading.Thread(target=run, args=(role,)) for role in servers]
        for thread in threads:
            thread.start()
        time.sleep(LOAD_SECONDS / 2)
        burst = shed_burst(servers["stable"], HELD)
        # Locust's requests share the limit, so one of the held may be shed too; none goes unanswered.
        assert 503 in burst[:-HELD], burst
        assert set(burst) <= {200, 503}, burst
        assert {out_of_range(s) for s in servers.values()} == {200}
        # Two scrape intervals: Prometheus has the burst's samples by then, and the load still runs.
        time.sleep(2)
        loaded_at = time.time()
        for thread in threads:
            thread.join(timeout=LOAD_SECONDS + 90)
        assert set(load) == set(servers), "a Locust run did not finish"
        yield Fleet(prometheus, versions, servers, load, loaded_at)


def test_every_target_is_scraped_with_the_chart_labels(fleet: Fleet, chart: Rendered) -> None:
    job = scrape_config(chart, {})["job_name"]
    up = query(fleet.prometheus, f'up{{job="{job}"}}', fleet.loaded_at)
    assert values(up) == [1.0] * len(fleet.servers)
    namespace = chart.one("ServiceMonitor")["metadata"]["namespace"]
    model_info = f'tabula_model_info{{job="{job}", namespace="{namespace}"}}'
    info = query(fleet.prometheus, model_info, fleet.loaded_at)
    assert {s["metric"]["model_version"] for s in info} == set(fleet.versions.versions.values())


def test_analysis_passes_a_canary_identical_to_stable(fleet: Fleet, chart: Rendered) -> None:
    verdicts = {}
    for metric in analysis_metrics(chart):
        result = values(query(fleet.prometheus, with_args(metric, "canary", "stable"), fleet.loaded_at))
        verdicts[metric.name] = (metric.judge(result), result)
    record_figures("analysis_identical_canary", {name: v[1] for name, v in verdicts.items()})
    assert verdicts, "the chart renders no Prometheus analysis"
    assert all(passed for passed, _ in verdicts.values()), verdicts


def test_analysis_fails_a_shifted_canary(fleet: Fleet, chart: Rendered) -> None:
    verdicts = {}
    for metric in analysis_metrics(chart):
        result = values(query(fleet.prometheus, with_args(metric, "shifted", "stable"), fleet.loaded_at))
        verdicts[metric.name] = (metric.judge(result), result)
    record_figures("analysis_shifted_canary", {name: v[1] for name, v in verdicts.items()})
    failed = {name for name, (passed, _) in verdicts.items() if not passed}
    # The shifted model is as fast and error-free as stable: only its predictions give it away.
    assert failed == {"prediction-shift"}, verdicts


def test_every_dashboard_panel_query_returns_data(fleet: Fleet, chart: Rendered) -> None:
    panels = dashboard_panels(chart)
    assert panels, "the chart renders no dashboard queries"
    empty = []
    for title, expr in panels:
        promql = expr.replace("$__rate_interval", RATE_INTERVAL)
        assert "$" not in promql, f"unhandled Grafana variable in {title}: {expr}"
        result = values(query(fleet.prometheus, promql, fleet.loaded_at))
        if not any(math.isfinite(v) for v in result):
            empty.append((title, promql, result))
    assert not empty, empty
