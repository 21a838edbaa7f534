"""The chart's class-shift analysis against a real Prometheus scraping synthetic classifier tracks.

Each track is a loopback exporter whose `tabula_predicted_class_total` counters grow at fixed rates
per class (the classification metric of the service contract: rows answered per class label). Prometheus
(Debian's binary) scrapes them every second, labelled as the chart's ServiceMonitor labels native
canary pods (`tabula_io_track`). The query comes from `helm template` of the native canary scenario
with the iris values overlay, and is measured the way the release loop measures it: its Prometheus
client (release.evidence) and its evaluator of the chart's successCondition (release.analysis.assess).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from release.analysis import assess
from release.evidence import AnalysisSpec, MetricSpec, Prometheus, fill
from tests.chart.helm import NAMESPACE, REPO_ROOT, render, scenario_file
from tests.support import prometheus_server

pytestmark = [pytest.mark.integration]

IRIS_VALUES = REPO_ROOT / "examples" / "iris" / "values.yaml"
MODEL_NAME = "iris-species"
# Rows per second per class label on each track.
TRACKS: dict[str, dict[str, float]] = {
    "stable": {"setosa": 5, "versicolor": 3, "virginica": 2},
    # The same shares at twice the traffic (a canary with more pods): no shift.
    "same": {"setosa": 10, "versicolor": 6, "virginica": 4},
    # setosa and versicolor swapped: a fifth of the rows changed class.
    "swapped": {"setosa": 3, "versicolor": 5, "virginica": 2},
    # Never answers virginica: its series does not exist, and a vector match alone would drop the class.
    "no-virginica": {"setosa": 5, "versicolor": 3},
    # Has served before, but not a row in the window: its counters stand still.
    "idle": {"setosa": 0, "versicolor": 0, "virginica": 0},
}
SCRAPES = 4  # samples of every series before measuring (rate() needs two; a few more steady it)
READY_SECONDS = 60.0


class Exporter(BaseHTTPRequestHandler):
    """`/metrics` of one track: counters at rate * seconds since start, in Prometheus' text format."""

    rates: dict[str, float]
    started: float

    def do_GET(self) -> None:
        elapsed = time.monotonic() - self.started
        lines = ["# TYPE tabula_predicted_class_total counter"]
        for label, rate in self.rates.items():
            labels = f'model_name="{MODEL_NAME}",model_version="7",route="/predict",class="{label}"'
            # An idle track keeps the count it had: 100 rows per class before the window.
            lines.append(f"tabula_predicted_class_total{{{labels}}} {100 + rate * elapsed}")
        body = ("\n".join(lines) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def exporter(rates: dict[str, float]) -> Iterator[str]:
    handler = type("TrackExporter", (Exporter,), {"rates": rates, "started": time.monotonic()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    result = render([scenario_file("native-canary"), IRIS_VALUES])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def class_shift(rendered: list[dict[str, Any]]) -> MetricSpec:
    (config,) = [
        o for o in rendered if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "tabula-analysis"
    ]
    spec = AnalysisSpec.from_json(config["data"]["analysis.json"])
    assert spec.track_label == "tabula_io_track"
    (metric,) = [m for m in spec.metrics if m.name == "class-shift"]
    return metric


@pytest.fixture(scope="module")
def prometheus(
    rendered: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    (service,) = [
        o
        for o in rendered
        if o["kind"] == "Service" and o["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    ]
    with ExitStack() as stack:
        targets = {track: stack.enter_context(exporter(rates)) for track, rates in TRACKS.items()}
        scrape = {
            "job_name": service["metadata"]["name"],
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "static_configs": [
                {"targets": [address], "labels": {"namespace": NAMESPACE, "tabula_io_track": track}}
                for track, address in targets.items()
            ],
        }
        root = tmp_path_factory.mktemp("class-shift")
        prometheus = Prometheus(stack.enter_context(prometheus_server(root, [scrape])))
        wait_for_scrapes(prometheus, series=sum(len(rates) for rates in TRACKS.values()))
        yield prometheus


def wait_for_scrapes(prometheus: Prometheus, series: int) -> None:
    deadline = time.monotonic() + READY_SECONDS
    query = f"count_over_time(tabula_predicted_class_total[2m]) >= {SCRAPES}"
    while len(prometheus.vector(query)) < series:
        assert time.monotonic() < deadline, f"Prometheus did not scrape {SCRAPES} samples of every track"
        time.sleep(0.5)


def measure(
    prometheus: Prometheus, metric: MetricSpec, candidate: str, stable: str
) -> tuple[str, list[float]]:
    """(phase, vector) of one measurement, as the release loop takes it."""
    values = prometheus.vector(fill(metric.query, {"candidate-track": candidate, "stable-track": stable}))
    return assess(metric.success_condition, values), values


CASES = {
    # case: (candidate, stable, phase, total variation distance)
    "identical shares pass": ("same", "stable", "Successful", 0.0),
    "two swapped classes fail": ("swapped", "stable", "Failed", 0.2),
    "a class only stable predicts fails": ("no-virginica", "stable", "Failed", 0.2),
    "a class only the candidate predicts fails": ("stable", "no-virginica", "Failed", 0.2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_class_shift_judges_the_candidate(prometheus: Prometheus, class_shift: MetricSpec, case: str) -> None:
    candidate, stable, phase, distance = CASES[case]

    measured, values = measure(prometheus, class_shift, candidate, stable)

    assert measured == phase, (case, values)
    assert values == [pytest.approx(distance, abs=0.005)]


NO_DATA = {
    "a candidate without series": ("missing", "stable"),
    "a stable track without series": ("stable", "missing"),
    "a candidate without rows in the window": ("idle", "stable"),
    "a stable track without rows in the window": ("stable", "idle"),
}


@pytest.mark.parametrize("case", list(NO_DATA))
def test_no_data_fails(prometheus: Prometheus, class_shift: MetricSpec, case: str) -> None:
    candidate, stable = NO_DATA[case]

    measured, values = measure(prometheus, class_shift, candidate, stable)

    assert (measured, values) == ("Failed", [])


def test_the_threshold_is_the_overlays_max_distance(class_shift: MetricSpec) -> None:
    values = yaml.safe_load((REPO_ROOT / "charts" / "tabula" / "values.yaml").read_text())
    maximum = values["rollout"]["analysis"]["classShift"]["maxDistance"]
    assert class_shift.success_condition == f"len(result) > 0 && result[0] <= {maximum}"
    assert json.dumps(maximum) == "0.1"
