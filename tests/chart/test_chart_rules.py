"""promtool: the chart's alerts and Argo analysis queries, from `helm template`, against synthetic series.

Nothing here repeats the chart's PromQL. Each AnalysisTemplate metric becomes an alert that fires while the
metric would *pass* (its query compared with its successCondition's threshold), so an empty or NaN result
counts as failing, as in Argo. Each case states which checks pass, or which alerts fire, for which version.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import NAMESPACE, Rendered, promtool_binary

pytestmark = pytest.mark.chart

Render = Callable[[str], Rendered]
TRACK_LABEL = "rollouts_pod_template_hash"  # Argo scenarios (tabula.trackLabel)
STABLE, CANARY = "3", "4"  # model versions of ci/canary-values.yaml
# Tracks: pod-template hashes of the stable and the candidate ReplicaSet (Argo's podTemplateHashValue).
STABLE_TRACK, CANARY_TRACK, OLD_TRACK = "6d4cf56db6", "7f9b8c5d4", "58b7c9f4d"
TRACKS = {STABLE: STABLE_TRACK, CANARY: CANARY_TRACK, "2": OLD_TRACK}
ARGS = {"candidate-track": CANARY_TRACK, "stable-track": STABLE_TRACK}
MINUTES = 180  # length of every synthetic series, one sample a minute
EVAL = "170m"
LATENCY_BUCKETS = ("0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf")
PREDICTION_BUCKETS = ("0.5", "1", "1.5", "2", "2.5", "3", "4", "5", "+Inf")
# Share of predictions per bucket (last = +Inf overflow), stable and a canary shifted upwards by two buckets.
NORMAL_PREDICTIONS = (0.05, 0.15, 0.2, 0.2, 0.15, 0.1, 0.1, 0.05, 0.0)
SHIFTED_PREDICTIONS = (0.0, 0.0, 0.05, 0.15, 0.2, 0.2, 0.15, 0.15, 0.1)
PER_MINUTE = 600  # 10 requests per second


def counter(per_minute: float, minutes: int = MINUTES) -> str:
    return f"0+{per_minute:g}x{minutes}"


def gauge(value: float, minutes: int = MINUTES) -> str:
    return f"{value:g}+0x{minutes}"


class Series:
    """Synthetic metrics of the service, labelled as Prometheus labels them when scraping the chart's pods."""

    def __init__(self, job: str, model_name: str, track_label: str) -> None:
        self.base = {"job": job, "namespace": NAMESPACE, "model_name": model_name}
        self.track_label = track_label
        self.items: list[dict[str, str]] = []

    def add(self, name: str, labels: dict[str, str], values: str) -> None:
        all_labels = self.base | labels
        rendered = ", ".join(f'{k}="{v}"' for k, v in sorted(all_labels.items()))
        self.items.append({"series": f"{name}{{{rendered}}}", "values": values})

    def raw(self, series: str, values: str) -> None:
        self.items.append({"series": series, "values": values})

    def version(
        self,
        version: str,
        error_ratio: float = 0.0,
        latency_bucket: str = "0.05",
        predictions: tuple[float, ...] = NORMAL_PREDICTIONS,
        out_of_range_per_row: float = 0.0,
        psi: float = 0.02,
        predicting: bool = True,
        track: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> None:
        """One track serving PER_MINUTE requests; all requests take up to `latency_bucket` seconds.

        The track defaults to the version's hash in TRACKS.
        """
        v = {"model_version": version, self.track_label: track or TRACKS[version]} | (extra or {})
        rows = PER_MINUTE if predicting else 0
        errors = round(rows * error_ratio)
        self.add(
            "tabula_http_requests_total",
            v | {"route": "/predict", "status_code": "200"},
            counter(rows - errors),
        )
        self.add(
            "tabula_http_requests_total", v | {"route": "/predict", "status_code": "500"}, counter(errors)
        )
        self.add("tabula_http_requests_total", v | {"route": "/readyz", "status_code": "200"}, counter(12))
        reached = False
        for le in LATENCY_BUCKETS:
            reached = reached or le == latency_bucket
            self.add(
                "tabula_http_request_duration_seconds_bucket",
                v | {"route": "/predict", "le": le},
                counter(rows if reached else 0),
            )
        self.add("tabula_http_request_duration_seconds_count", v | {"route": "/predict"}, counter(rows))
        predicted = rows - errors
        self.add("tabula_predictions_total", v | {"route": "/predict"}, counter(predicted))
        cumulative = 0.0
        for le, share in zip(PREDICTION_BUCKETS, predictions, strict=True):
            cumulative += share
            self.add("tabula_prediction_value_bucket", v | {"le": le}, counter(round(predicted * cumulative)))
        self.add("tabula_prediction_value_count", v, counter(predicted))
        self.add("tabula_prediction_value_sum", v, counter(predicted * 2.0))
        self.add(
            "tabula_input_out_of_range_total",
            v | {"feature": "MedInc"},
            counter(predicted * out_of_range_per_row),
        )
        self.add("tabula_feature_drift_psi", v | {"feature": "MedInc"}, gauge(psi))
        self.add("tabula_feature_drift_psi", v | {"feature": "HouseAge"}, gauge(0.01))
        self.add("tabula_model_info", v | {"run_id": f"run{version}"}, gauge(1))


# --- rules extracted from the rendered chart ------------------------------------------------------------


def alert_rules_file(rendered: Rendered, directory: Path) -> Path:
    path = directory / "alerts.yaml"
    path.write_text(yaml.safe_dump(rendered.one("PrometheusRule")["spec"], sort_keys=False))
    return path


def analysis_spec(rendered: Rendered) -> dict[str, Any]:
    """analysis.json of the chart's analysis ConfigMap (tabula.analysisSpec)."""
    spec: dict[str, Any] = json.loads(rendered.one("ConfigMap", "tabula-analysis")["data"]["analysis.json"])
    return spec


def analysis_rules_file(rendered: Rendered, directory: Path) -> tuple[Path, list[str]]:
    """One alert per analysis metric, firing while the metric passes, for the tracks of ARGS.

    The chart guards every condition, `len(result) > 0 && result[0] OP X`: the alert `(query) OP X`
    fires exactly when the vector has a sample that passes, so no data and NaN do not pass.
    """
    rules: list[dict[str, Any]] = []
    names: list[str] = []
    for metric in analysis_spec(rendered)["metrics"]:
        query = fill_args(metric["query"], ARGS)
        condition = re.fullmatch(
            r"len\(result\) > 0 && result\[0\] (>=|<=) ([0-9.eE+-]+)", metric["successCondition"]
        )
        assert condition, f"successCondition not understood: {metric['successCondition']}"
        name = pass_alert(metric["name"])
        rules.append({"alert": name, "expr": f"({query.strip()}) {condition[1]} {condition[2]}"})
        names.append(metric["name"])
    path = directory / "analysis.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "analysis", "rules": rules}]}, sort_keys=False))
    return path, names


def fill_args(query: str, args: dict[str, str]) -> str:
    used = set(re.findall(r"\{\{args\.([a-z-]+)\}\}", query))
    assert used <= set(args), f"undeclared args {used - set(args)}"
    return re.sub(r"\{\{args\.([a-z-]+)\}\}", lambda m: args[m.group(1)], query)


def pass_alert(metric: str) -> str:
    return "AnalysisPass_" + metric.replace("-", "_")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool_binary(), *args], capture_output=True, text=True, check=False, timeout=60)


def run_promtool_test(directory: Path, rules: Path, series: Series, checks: list[dict[str, Any]]) -> None:
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series.items, "promql_expr_test": checks}],
    }
    path = directory / "test.yaml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def firing(alert: str, by: str, expected: list[dict[str, str]], eval_time: str = EVAL) -> dict[str, Any]:
    """promtool check: exactly these label sets (over `by`) of `alert` fire at eval_time."""
    return {
        "expr": f'count by ({by}) (ALERTS{{alertname="{alert}", alertstate="firing"}})',
        "eval_time": eval_time,
        "exp_samples": [
            {"labels": "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "value": 1}
            for labels in expected
        ],
    }


@pytest.fixture(scope="module")
def canary(rendered: Render) -> Rendered:
    return rendered("canary")


@pytest.fixture(scope="module")
def series_factory(canary: Rendered) -> Callable[[], Series]:
    job = next(
        s
        for s in canary.of_kind("Service")
        if s["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    )
    return lambda: Series(job["metadata"]["name"], canary.values["model"]["name"], TRACK_LABEL)


def every_query(r: Rendered) -> list[str]:
    """Every PromQL query the scenario renders: alerts, analysis and evidence, dashboard panels."""
    queries = [rule["expr"] for g in r.one("PrometheusRule")["spec"]["groups"] for rule in g["rules"]]
    args = ARGS | {"track": CANARY_TRACK, "range": "420s"}
    for config in r.of_kind("ConfigMap"):
        if "analysis.json" in config["data"]:
            spec = json.loads(config["data"]["analysis.json"])
            queries += [fill_args(m["query"], args) for m in spec["metrics"]]
            queries.append(fill_args(spec["evidence"]["requestsQuery"], args))
    for template in r.of_kind("AnalysisTemplate"):
        queries += [
            fill_args(m["provider"]["prometheus"]["query"], args)
            for m in template["spec"]["metrics"]
            if "prometheus" in m["provider"]
        ]
    dashboard = r.one("ConfigMap", "tabula-dashboard")
    for panel in json.loads(dashboard["data"]["tabula.json"])["panels"]:
        queries += [t["expr"].replace("$__rate_interval", "1m") for t in panel.get("targets", [])]
    return queries


@pytest.mark.parametrize("scenario", ["canary", "blue-green", "native-canary", "native-blue-green"])
def test_promtool_checks_every_rendered_query(rendered: Render, tmp_path: Path, scenario: str) -> None:
    queries = every_query(rendered(scenario))
    assert len(queries) > 20
    rules = [{"record": f"tabula:check_{index}", "expr": query} for index, query in enumerate(queries)]
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}, sort_keys=False))
    result = promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


# --- analysis: healthy canary passes, erroring / slow / shifted canary fails ---

CANARY_CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    # case: (canary behaviour, analysis metrics expected to fail)
    "healthy": ({}, set()),
    "erroring": ({"error_ratio": 0.05}, {"success-rate"}),
    "slow": ({"latency_bucket": "1"}, {"latency-p95"}),
    "shifted": ({"predictions": SHIFTED_PREDICTIONS}, {"prediction-shift"}),
}


@pytest.mark.parametrize("case", list(CANARY_CASES))
def test_analysis_queries_judge_the_canary(
    canary: Rendered, series_factory: Callable[[], Series], tmp_path: Path, case: str
) -> None:
    behaviour, failing = CANARY_CASES[case]
    rules, metrics = analysis_rules_file(canary, tmp_path)
    assert set(metrics) == {"success-rate", "latency-p95", "prediction-shift"}
    series = series_factory()
    series.version(STABLE)
    series.version(CANARY, **behaviour)
    # A third version with errors must not leak into the canary's or stable's numbers.
    series.version("2", error_ratio=0.5, latency_bucket="2.5", predictions=SHIFTED_PREDICTIONS)
    checks = [
        {
            "expr": f'count(ALERTS{{alertname="{pass_alert(m)}", alertstate="firing"}})',
            "eval_time": EVAL,
            "exp_samples": [] if m in failing else [{"labels": "{}", "value": 1}],
        }
        for m in metrics
    ]
    run_promtool_test(tmp_path, rules, series, checks)


def test_analysis_fails_a_canary_without_traffic(
    canary: Rendered, series_factory: Callable[[], Series], tmp_path: Path
) -> None:
    rules, metrics = analysis_rules_file(canary, tmp_path)
    series = series_factory()
    series.version(STABLE)
    series.version(CANARY, predicting=False)
    checks = [
        {"expr": f'count(ALERTS{{alertname="{pass_alert(m)}"}})', "eval_time": EVAL, "exp_samples": []}
        for m in metrics
    ]
    run_promtool_test(tmp_path, rules, series, checks)


def test_analysis_tells_tracks_of_one_model_version_apart(
    canary: Rendered, series_factory: Callable[[], Series], tmp_path: Path
) -> None:
    """A candidate serving the stable's model version (a new image of it) is still judged on its own pods."""
    rules, metrics = analysis_rules_file(canary, tmp_path)
    series = series_factory()
    series.version(STABLE)
    series.version(STABLE, track=CANARY_TRACK, predictions=SHIFTED_PREDICTIONS, error_ratio=0.05)
    failing = {"success-rate", "prediction-shift"}
    checks = [
        {
            "expr": f'count(ALERTS{{alertname="{pass_alert(m)}", alertstate="firing"}})',
            "eval_time": EVAL,
            "exp_samples": [] if m in failing else [{"labels": "{}", "value": 1}],
        }
        for m in metrics
    ]
    run_promtool_test(tmp_path, rules, series, checks)


# --- alerts: each fires for the bad version only, and stays silent for healthy ones ---

ALERT_CASES: dict[str, dict[str, Any]] = {
    "TabulaErrorBudgetBurn": {"error_ratio": 0.05},
    "TabulaLatencyHigh": {"latency_bucket": "1"},
    "TabulaFeatureDrift": {"psi": 0.6},
    "TabulaInputOutOfRange": {"out_of_range_per_row": 0.5},
    "TabulaNoPredictions": {"predicting": False},
}
BY = {"TabulaFeatureDrift": "model_version, feature, severity"}


def rendered_alerts(r: Rendered) -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for g in r.one("PrometheusRule")["spec"]["groups"] for rule in g["rules"]}


def test_every_rendered_alert_has_a_case(canary: Rendered) -> None:
    assert set(rendered_alerts(canary)) == set(ALERT_CASES) | {"TabulaPodRestarts"}


@pytest.mark.parametrize("alert", list(ALERT_CASES))
def test_alert_fires_for_the_bad_version_only(
    canary: Rendered, series_factory: Callable[[], Series], tmp_path: Path, alert: str
) -> None:
    rules = alert_rules_file(canary, tmp_path)
    severity = rendered_alerts(canary)[alert]["labels"]["severity"]
    series = series_factory()
    series.version(STABLE)
    series.version(CANARY, **ALERT_CASES[alert])
    by = BY.get(alert, "model_version, severity")
    expected = {"model_version": CANARY, "severity": severity}
    if "feature" in by:
        expected = {"model_version": CANARY, "feature": "MedInc", "severity": severity}
    checks = [firing(alert, by, [dict(sorted(expected.items()))])]
    # Healthy traffic raises none of the other alerts.
    checks += [firing(other, "model_version", []) for other in ALERT_CASES if other != alert]
    run_promtool_test(tmp_path, rules, series, checks)


def test_alerts_stay_silent_for_healthy_versions(
    canary: Rendered, series_factory: Callable[[], Series], tmp_path: Path
) -> None:
    rules = alert_rules_file(canary, tmp_path)
    series = series_factory()
    series.version(STABLE)
    series.version(CANARY, error_ratio=0.005, psi=0.1, out_of_range_per_row=0.01)  # below every threshold
    checks = [firing(alert, "model_version", []) for alert in rendered_alerts(canary)]
    run_promtool_test(tmp_path, rules, series, checks)


def test_error_budget_alert_resolves_when_the_short_window_recovers(
    canary: Rendered, series_factory: Callable[[], Series], tmp_path: Path
) -> None:
    """Multi-window burn rate: errors in the last hour but none in the last minutes no longer page."""
    rules = alert_rules_file(canary, tmp_path)
    series = series_factory()
    series.version(STABLE)
    labels = ", ".join(
        f'{k}="{v}"'
        for k, v in sorted(
            (series.base | {"model_version": CANARY, TRACK_LABEL: CANARY_TRACK, "route": "/predict"}).items()
        )
    )
    # 150 minutes at 5% errors, then 30 clean minutes.
    series.raw(f'tabula_http_requests_total{{{labels}, status_code="200"}}', "0+570x150 85500+600x30")
    series.raw(f'tabula_http_requests_total{{{labels}, status_code="500"}}', "0+30x150 4500+0x30")
    severity = rendered_alerts(canary)["TabulaErrorBudgetBurn"]["labels"]["severity"]
    checks = [
        firing(
            "TabulaErrorBudgetBurn",
            "model_version, severity",
            [{"model_version": CANARY, "severity": severity}],
            "140m",
        ),
        firing("TabulaErrorBudgetBurn", "model_version", [], "175m"),
    ]
    run_promtool_test(tmp_path, rules, series, checks)


def test_restart_alert_watches_this_release_only(
    canary: Rendered, series_factory: Callable[[], Series], tmp_path: Path
) -> None:
    rules = alert_rules_file(canary, tmp_path)
    series = series_factory()
    restarts = "kube_pod_container_status_restarts_total"
    series.raw(
        f'{restarts}{{namespace="{NAMESPACE}", pod="tabula-7d9f-abcde", container="server"}}', "0+1x60"
    )
    series.raw(
        f'{restarts}{{namespace="{NAMESPACE}", pod="tabula-7d9f-fghij", container="server"}}', "0+0x60"
    )
    series.raw(
        f'{restarts}{{namespace="{NAMESPACE}", pod="other-app-1234-xyz", container="server"}}', "0+1x60"
    )
    series.raw(f'{restarts}{{namespace="staging", pod="tabula-7d9f-abcde", container="server"}}', "0+1x60")
    checks = [firing("TabulaPodRestarts", "pod", [{"pod": "tabula-7d9f-abcde"}], "50m")]
    run_promtool_test(tmp_path, rules, series, checks)


IdleCase = tuple[str, list[tuple[str, dict[str, str], bool]], list[str]]
IDLE_PREVIEW_CASES: dict[str, IdleCase] = {
    # scenario: (track label, [(track, extra labels, predicting)], tracks expected to fire)
    "blue-green": (
        TRACK_LABEL,
        [
            (STABLE_TRACK, {"tabula_io_track": "active"}, True),
            (CANARY_TRACK, {"tabula_io_track": "preview"}, False),
            (OLD_TRACK, {"tabula_io_track": "active"}, False),
        ],
        [OLD_TRACK],
    ),
    "native-blue-green": (
        "tabula_io_track",
        [("green", {}, False), ("blue", {}, False)],
        ["green"],  # ci/native-blue-green-values.yaml: green is active, blue the idle preview
    ),
}


@pytest.mark.parametrize("scenario", list(IDLE_PREVIEW_CASES))
def test_no_predictions_alert_spares_an_idle_blue_green_preview(
    rendered: Render, tmp_path: Path, scenario: str
) -> None:
    r = rendered(scenario)
    track_label, tracks, expected = IDLE_PREVIEW_CASES[scenario]
    rules = alert_rules_file(r, tmp_path)
    series = Series("tabula-metrics", r.values["model"]["name"], track_label)
    for track, extra, predicting in tracks:
        series.version(STABLE, track=track, extra=extra, predicting=predicting)
    severity = rendered_alerts(r)["TabulaNoPredictions"]["labels"]["severity"]
    fired = [{track_label: track, "severity": severity} for track in expected]
    checks = [firing("TabulaNoPredictions", f"{track_label}, severity", fired)]
    run_promtool_test(tmp_path, rules, series, checks)
