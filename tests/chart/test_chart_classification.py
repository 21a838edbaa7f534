"""The chart for a classifier: examples/iris/values.yaml over the scenarios, and `model.task` end to end.

Classification swaps the regression-only parts: the `class-shift` analysis replaces `prediction-shift`,
the class-share and confidence alerts join the SLO alerts, and the dashboard's prediction panels show
classes and confidence instead of values. The promtool cases judge the rendered queries on synthetic
series of the classification metrics (`tabula_predicted_class_total{..., class}`,
`tabula_prediction_confidence`); tests/integration/monitoring/test_class_shift.py measures the same
analysis against a real Prometheus server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from contracts.examples import load_example
from tests.chart.helm import (
    CHART_DIR,
    KUBERNETES_VERSIONS,
    REPO_ROOT,
    Rendered,
    crd_errors,
    render,
    run_helm,
    scenario_file,
)
from tests.chart.test_chart_render import embedded_builtin_objects, is_custom
from tests.chart.test_chart_rules import (
    ARGS,
    CANARY,
    EVAL,
    MINUTES,
    STABLE,
    STABLE_TRACK,
    TRACK_LABEL,
    TRACKS,
    Series,
    alert_rules_file,
    analysis_rules_file,
    counter,
    every_query,
    fill_args,
    firing,
    pass_alert,
    promtool,
    rendered_alerts,
    run_promtool_test,
)

pytestmark = pytest.mark.chart

Render = Callable[[str], Rendered]
IRIS = load_example("iris")
OVERLAY = REPO_ROOT / "examples" / "iris" / "values.yaml"
SCENARIOS = ("default", "canary", "blue-green", "native-canary", "native-blue-green")
REGRESSION_ONLY = "tabula_prediction_value"
CLASSIFICATION_ONLY = ("tabula_predicted_class_total", "tabula_prediction_confidence")
SPECIES = ("setosa", "versicolor", "virginica")


def without_nulls(node: Any) -> Any:
    """Helm's merge of an overlay: a null deletes the key of the defaults."""
    if isinstance(node, dict):
        return {key: without_nulls(value) for key, value in node.items() if value is not None}
    return node


def merge(base: Any, overlay: Any) -> Any:
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = merge(base.get(key), value)
        return merged
    return overlay


def merged_values(*files: Path) -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    for path in files:
        values = merge(values, yaml.safe_load(path.read_text()) or {})
    result: dict[str, Any] = without_nulls(values)
    return result


@pytest.fixture(scope="module")
def iris(helm: str) -> Render:
    """A scenario rendered with the iris overlay on top, once per module."""
    cache: dict[str, Rendered] = {}

    def get(scenario: str) -> Rendered:
        if scenario not in cache:
            result = render([scenario_file(scenario), OVERLAY])
            assert result.returncode == 0, f"{scenario} + iris:\n{result.stderr}"
            objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
            values = merged_values(scenario_file(scenario), OVERLAY)
            cache[scenario] = Rendered(scenario=f"{scenario}+iris", objects=objects, values=values)
        return cache[scenario]

    return get


# --- the overlay ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_lint_strict_with_the_iris_overlay(helm: str, scenario: str) -> None:
    result = run_helm(
        "lint", "--strict", str(CHART_DIR), "--values", str(scenario_file(scenario)), "--values", str(OVERLAY)
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_iris_objects_validate_strictly(iris: Render, scenario: str) -> None:
    objects = iris(scenario).objects
    builtin = [o for o in objects if not is_custom(o)]
    builtin += [e for o in objects if is_custom(o) for e in embedded_builtin_objects(o)]
    errors = [
        f"{o['kind']}/{o['metadata']['name']} {e}" for o in objects if is_custom(o) for e in crd_errors(o)
    ]
    for manifest in builtin:
        try:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSIONS[-1], strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {error.message}")
    assert not errors, "\n".join(errors)


def test_the_overlay_is_the_iris_example() -> None:
    """The chart cannot read example.yaml: the overlay repeats its names, and must agree with it."""
    values = merged_values(OVERLAY)
    spec = IRIS.spec
    assert values["model"] == {"name": spec.model_name, "version": "", "task": spec.task, "example": "iris"}
    assert values["training"]["mlflow"]["experiment"] == spec.experiment
    row = values["tests"]["goldenRow"]
    assert list(row) == spec.feature_names
    for feature in spec.features:
        assert feature.minimum is None or row[feature.name] >= feature.minimum
        assert feature.maximum is None or row[feature.name] <= feature.maximum
    assert values["tests"]["expectedPrediction"] in SPECIES


def test_a_bad_task_is_refused_by_the_schema(helm: str) -> None:
    result = render([scenario_file("default"), OVERLAY], ["model.task=clustering"])
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr


def test_training_and_load_pods_get_the_example(iris: Render) -> None:
    training = iris("training-cronjob").one("ConfigMap", "tabula-training")["data"]
    assert (training["TABULA_EXAMPLE"], training["TABULA_MODEL_NAME"], training["TABULA_EXPERIMENT"]) == (
        "iris",
        "iris-species",
        "iris",
    )
    loaders = [
        container
        for template in iris("canary").of_kind("AnalysisTemplate")
        for metric in template["spec"]["metrics"]
        if "job" in metric["provider"]
        for container in metric["provider"]["job"]["spec"]["template"]["spec"]["containers"]
    ]
    assert loaders, "the canary analysis renders no load Job"
    for container in loaders:
        assert {"name": "TABULA_LOAD_EXAMPLE", "value": "iris"} in container["env"]


# --- analysis, alerts and dashboard by task -------------------------------------------------------------


ANALYSED = ("canary", "blue-green", "native-canary", "native-blue-green")


def analysis_json(r: Rendered) -> dict[str, Any]:
    (config,) = [c for c in r.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-analysis")]
    spec: dict[str, Any] = json.loads(config["data"]["analysis.json"])
    return spec


@pytest.mark.parametrize("scenario", ANALYSED)
def test_classification_analysis_judges_class_shift(iris: Render, scenario: str) -> None:
    r = iris(scenario)
    spec = analysis_json(r)
    assert [m["name"] for m in spec["metrics"]] == ["success-rate", "latency-p95", "class-shift"]
    (shift,) = [m for m in spec["metrics"] if m["name"] == "class-shift"]
    maximum = r.values["rollout"]["analysis"]["classShift"]["maxDistance"]
    assert shift["successCondition"] == f"len(result) > 0 && result[0] <= {maximum}"
    track = spec["trackLabel"]
    for arg in ("candidate-track", "stable-track"):
        assert f'{track}="{{{{args.{arg}}}}}"' in shift["query"]
    assert REGRESSION_ONLY not in json.dumps(spec)
    for template in r.of_kind("AnalysisTemplate"):
        names = [m["name"] for m in template["spec"]["metrics"] if "prometheus" in m["provider"]]
        assert names in ([], [m["name"] for m in spec["metrics"]])


def test_class_shift_can_be_turned_off(helm: str) -> None:
    result = render([scenario_file("native-canary"), OVERLAY], ["rollout.analysis.classShift.enabled=false"])
    assert result.returncode == 0, result.stderr
    (config,) = [
        d
        for d in yaml.safe_load_all(result.stdout)
        if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "tabula-analysis"
    ]
    assert [m["name"] for m in json.loads(config["data"]["analysis.json"])["metrics"]] == [
        "success-rate",
        "latency-p95",
    ]


def dashboard(r: Rendered) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(r.one("ConfigMap", "tabula-dashboard")["data"]["tabula.json"])
    return board


def test_classification_alerts_and_panels(iris: Render, rendered: Render) -> None:
    classifier, regressor = iris("canary"), rendered("canary")
    assert set(rendered_alerts(classifier)) == set(rendered_alerts(regressor)) | {
        "TabulaClassShareShift",
        "TabulaLowConfidence",
    }
    titles = [panel["title"] for panel in dashboard(classifier)["panels"]]
    assert "Predicted classes per second by model version" in titles
    assert "Mean top-class confidence by model version" in titles
    assert not {"Mean prediction by model version", "Prediction quantiles by model version"} & set(titles)
    queries = " ".join(every_query(classifier))
    assert REGRESSION_ONLY not in queries
    assert all(name in queries for name in CLASSIFICATION_ONLY)


@pytest.mark.parametrize("scenario", ["default", "canary", "native-blue-green"])
def test_regression_renders_no_classification_query(rendered: Render, scenario: str) -> None:
    r = rendered(scenario)
    text = json.dumps(r.objects)
    assert not [name for name in CLASSIFICATION_ONLY if name in text]
    assert REGRESSION_ONLY in json.dumps(dashboard(r))
    assert '"task"' not in json.dumps(dashboard(r)), "the task marker is the chart's, not Grafana's"


def test_panels_of_each_task_are_laid_out_without_overlap(iris: Render, rendered: Render) -> None:
    for r in (iris("canary"), rendered("canary")):
        cells: set[tuple[int, int]] = set()
        for panel in dashboard(r)["panels"]:
            grid = panel["gridPos"]
            area = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not area & cells, f"{r.scenario}: {panel['title']} overlaps another panel"
            cells |= area
        ids = [panel["id"] for panel in dashboard(r)["panels"]]
        assert len(ids) == len(set(ids))


@pytest.mark.parametrize("scenario", ["canary", "native-canary", "native-blue-green"])
def test_promtool_checks_every_classification_query(iris: Render, tmp_path: Path, scenario: str) -> None:
    queries = every_query(iris(scenario))
    rules = [{"record": f"tabula:check_{index}", "expr": query} for index, query in enumerate(queries)]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}, sort_keys=False))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# --- promtool: the class-shift analysis and the classification alerts on synthetic series ---------------


class ClassifierSeries(Series):
    """The classification metrics of one track: rows per class label a minute, and top-class confidence."""

    def classes(
        self,
        version: str,
        per_minute: dict[str, float],
        confidence: float = 0.9,
        track: str | None = None,
        minutes: int = MINUTES,
    ) -> None:
        v = {"model_version": version, self.track_label: track or TRACKS[version]}
        for label, rows in per_minute.items():
            self.add(
                "tabula_predicted_class_total",
                v | {"route": "/predict", "class": label},
                counter(rows, minutes),
            )
        total = sum(per_minute.values())
        self.add("tabula_prediction_confidence_sum", v, counter(total * confidence, minutes))
        self.add("tabula_prediction_confidence_count", v, counter(total, minutes))


STABLE_SHARES = {"setosa": 300, "versicolor": 180, "virginica": 120}
ANALYSIS_CASES: dict[str, tuple[dict[str, float] | None, bool, float | None]] = {
    # case: (canary's rows per class a minute or None for no series, passes, total variation distance)
    "same shares, twice the rows": ({"setosa": 600, "versicolor": 360, "virginica": 240}, True, 0.0),
    "two classes swapped": ({"setosa": 180, "versicolor": 300, "virginica": 120}, False, 0.2),
    "a class stable predicts never answered": ({"setosa": 300, "versicolor": 180}, False, 0.2),
    "a class stable never predicted": ({**STABLE_SHARES, "hybrid": 150}, False, 0.2),
    "no traffic": ({"setosa": 0, "versicolor": 0, "virginica": 0}, False, None),
    "no series": (None, False, None),
}


@pytest.fixture(scope="module")
def iris_canary(iris: Render) -> Rendered:
    return iris("canary")


def classifier_series(r: Rendered) -> ClassifierSeries:
    (service,) = [
        s for s in r.of_kind("Service") if s["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    ]
    return ClassifierSeries(service["metadata"]["name"], r.values["model"]["name"], TRACK_LABEL)


@pytest.mark.parametrize("case", list(ANALYSIS_CASES))
def test_class_shift_judges_the_canary(iris_canary: Rendered, tmp_path: Path, case: str) -> None:
    canary, passes, distance = ANALYSIS_CASES[case]
    rules, metrics = analysis_rules_file(iris_canary, tmp_path)
    assert "class-shift" in metrics
    series = classifier_series(iris_canary)
    series.classes(STABLE, STABLE_SHARES)
    if canary is not None:
        series.classes(CANARY, canary)
    # An old version with another mix must not leak into either track's shares.
    series.classes("2", {"virginica": 900})
    (shift,) = [m for m in analysis_json(iris_canary)["metrics"] if m["name"] == "class-shift"]
    checks: list[dict[str, Any]] = [
        {
            "expr": f'count(ALERTS{{alertname="{pass_alert("class-shift")}", alertstate="firing"}})',
            "eval_time": EVAL,
            "exp_samples": [{"labels": "{}", "value": 1}] if passes else [],
        },
        {
            "expr": fill_args(shift["query"], ARGS),
            "eval_time": EVAL,
            "exp_samples": [] if distance is None else [{"labels": "{}", "value": distance}],
        },
    ]
    run_promtool_test(tmp_path, rules, series, checks)


def test_class_shift_needs_a_stable_track_with_traffic(iris_canary: Rendered, tmp_path: Path) -> None:
    rules, _ = analysis_rules_file(iris_canary, tmp_path)
    series = classifier_series(iris_canary)
    series.classes(CANARY, STABLE_SHARES)
    checks = [
        {
            "expr": f'count(ALERTS{{alertname="{pass_alert("class-shift")}"}})',
            "eval_time": EVAL,
            "exp_samples": [],
        }
    ]
    run_promtool_test(tmp_path, rules, series, checks)


DAY = 1440  # minutes
SHIFT_MINUTES = DAY + 200


def mix_changing_at_one_day(before: float, after: float) -> str:
    """A counter of `before` rows a minute for a day, then `after` a minute."""
    return f"0+{before:g}x{DAY} {before * DAY + after:g}+{after:g}x{SHIFT_MINUTES - DAY - 1}"


def daily_series(r: Rendered, now: dict[str, float], day_ago: dict[str, float] | None) -> ClassifierSeries:
    """One stable track whose class mix is `day_ago` for the first day and `now` after it."""
    series = classifier_series(r)
    labels = series.base | {"model_version": STABLE, TRACK_LABEL: STABLE_TRACK, "route": "/predict"}
    for label in sorted(set(now) | set(day_ago or {})):
        rendered_labels = ", ".join(f'{k}="{v}"' for k, v in sorted((labels | {"class": label}).items()))
        before = (day_ago or {}).get(label, 0.0)
        values = mix_changing_at_one_day(before, now.get(label, 0.0))
        if day_ago is None:
            values = f"_x{DAY} 0+{now.get(label, 0.0):g}x{SHIFT_MINUTES - DAY - 1}"
        series.raw(f"tabula_predicted_class_total{{{rendered_labels}}}", values)
    return series


SHIFT_CASES: dict[str, tuple[dict[str, float], dict[str, float] | None, bool]] = {
    # case: (mix now, mix a day ago or None without series then, alert fires)
    "the same mix": (STABLE_SHARES, STABLE_SHARES, False),
    "the same mix at half the traffic": ({k: v / 2 for k, v in STABLE_SHARES.items()}, STABLE_SHARES, False),
    "a mix turned upside down": ({"setosa": 120, "versicolor": 180, "virginica": 300}, STABLE_SHARES, True),
    "a class no longer predicted": ({"setosa": 400, "versicolor": 100}, STABLE_SHARES, True),
    "no traffic a day ago": (STABLE_SHARES, None, False),
}


@pytest.mark.parametrize("case", list(SHIFT_CASES))
def test_class_share_alert_compares_with_the_day_before(
    iris_canary: Rendered, tmp_path: Path, case: str
) -> None:
    now, day_ago, fires = SHIFT_CASES[case]
    rules = alert_rules_file(iris_canary, tmp_path)
    series = daily_series(iris_canary, now, day_ago)
    severity = rendered_alerts(iris_canary)["TabulaClassShareShift"]["labels"]["severity"]
    expected = [{"model_name": "iris-species", "severity": severity}] if fires else []
    checks = [firing("TabulaClassShareShift", "model_name, severity", expected, f"{SHIFT_MINUTES - 5}m")]
    run_promtool_test(tmp_path, rules, series, checks)


def test_low_confidence_alert_fires_for_the_unsure_version_only(
    iris_canary: Rendered, tmp_path: Path
) -> None:
    rules = alert_rules_file(iris_canary, tmp_path)
    series = classifier_series(iris_canary)
    minimum = iris_canary.values["monitoring"]["rules"]["lowConfidence"]["minMean"]
    series.classes(STABLE, STABLE_SHARES, confidence=minimum + 0.05)
    series.classes(CANARY, STABLE_SHARES, confidence=minimum - 0.05)
    severity = rendered_alerts(iris_canary)["TabulaLowConfidence"]["labels"]["severity"]
    checks = [
        firing(
            "TabulaLowConfidence",
            "model_version, severity",
            [{"model_version": CANARY, "severity": severity}],
        ),
        firing("TabulaClassShareShift", "model_name", []),
    ]
    run_promtool_test(tmp_path, rules, series, checks)


# --- the `helm test` pod of a classifier ----------------------------------------------------------------


def helm_test_pod(r: Rendered) -> tuple[str, dict[str, str]]:
    (pod,) = [p for p in r.of_kind("Pod") if p["metadata"]["name"].endswith("test-prediction")]
    (container,) = pod["spec"]["containers"]
    return container["args"][0], {e["name"]: e["value"] for e in container["env"]}


@contextmanager
def answering(body: dict[str, Any]) -> Iterator[str]:
    """A loopback server answering every POST with `body`: the service as the test pod sees it."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            row = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            assert set(row) == set(IRIS.spec.feature_names), row
            payload = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


PROBABILITIES = {"setosa": 0.97, "versicolor": 0.02, "virginica": 0.01}
POD_CASES: dict[str, tuple[dict[str, Any], str | None]] = {
    # answer: (body, None when the pod passes, or what its failure says)
    "the golden label": ({"prediction": "setosa", "probabilities": PROBABILITIES}, None),
    "another label": ({"prediction": "virginica", "probabilities": PROBABILITIES}, "differs from the golden"),
    "no probabilities": ({"prediction": "setosa"}, "a label among probabilities"),
    "probabilities not summing to 1": (
        {"prediction": "setosa", "probabilities": {"setosa": 0.5, "virginica": 0.1}},
        "a label among probabilities",
    ),
    "a regression answer": ({"prediction": 1.7}, "a label among probabilities"),
}


@pytest.mark.parametrize("case", list(POD_CASES))
def test_helm_test_pod_checks_the_golden_label(iris: Render, case: str) -> None:
    body, failure = POD_CASES[case]
    script, env = helm_test_pod(iris("default"))
    assert env["TASK"] == "classification"
    with answering(body) as url:
        completed = subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, **env, "URL": url},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    if failure is None:
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert "golden prediction OK" in completed.stdout
    else:
        assert completed.returncode != 0, completed.stdout
        assert failure in completed.stderr


# --- names: only the contract's metrics and labels ----------------------------------------------------------

# The classification series of the service contract (CONTRACT3, "Classification in the service"), with the
# label they add; docs/architecture.md's metric table lists the regression service's.
CLASSIFICATION_METRICS = {
    "tabula_predicted_class_total",
    "tabula_prediction_confidence_bucket",
    "tabula_prediction_confidence_sum",
    "tabula_prediction_confidence_count",
}


# Argo scenarios: a native track label (tabula_io_track) would read as a metric name below.
@pytest.mark.parametrize("scenario", ["canary", "blue-green"])
def test_classification_queries_use_only_contract_names(iris: Render, scenario: str) -> None:
    from tests.chart.test_chart_labels import (
        chart_queries,
        misread_labels,
        scrape_target_labels,
        service_labels,
    )
    from tests.chart.test_chart_render import contract_metrics

    r = iris(scenario)
    allowed = contract_metrics() | CLASSIFICATION_METRICS | {"kube_pod_container_status_restarts_total"}
    emitted, attached = service_labels() | {"class"}, scrape_target_labels(r)
    problems = []
    for where, promql in chart_queries(r):
        used = set(re.findall(r"\b(tabula_[a-z_]+|kube_[a-z_]+)\b(?!\s*(?:=|!=|=~|!~)\s*\")", promql))
        if used - allowed:
            problems.append(f"{where}: unknown metrics {sorted(used - allowed)}")
        if "kube_" not in promql and (misread := misread_labels(promql, emitted, attached)):
            problems.append(f"{where}: labels {sorted(misread)}")
    assert not problems, "\n".join(problems)
