"""The analysis, rendered once (tabula.analysisSpec): the analysis ConfigMap and the Argo AnalysisTemplate.

The ConfigMap's analysis.json has the shape the release loop reads (CONTRACT: "The analysis, rendered
once for both providers"); the AnalysisTemplate's Prometheus metrics are the same metrics.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import Rendered, render, scenario_file

pytestmark = pytest.mark.chart

Render = Callable[[str], Rendered]
METRIC_KEYS = {
    "name",
    "query",
    "successCondition",
    "interval",
    "count",
    "failureLimit",
    "consecutiveErrorLimit",
    "initialDelay",
}
ANALYSED = {
    # scenario: track label
    "canary": "rollouts_pod_template_hash",
    "blue-green": "rollouts_pod_template_hash",
    "argo-canary-nginx": "rollouts_pod_template_hash",
    "native-canary": "tabula_io_track",
    "native-canary-ingress": "tabula_io_track",
    "native-blue-green": "tabula_io_track",
    "long-names": "tabula_io_track",
}


def spec_of(r: Rendered) -> dict[str, Any]:
    (config,) = [c for c in r.of_kind("ConfigMap") if c["metadata"]["name"].endswith("-analysis")]
    assert config["metadata"]["labels"]["app.kubernetes.io/component"] == "analysis"
    assert set(config["data"]) == {"analysis.json"}
    spec: dict[str, Any] = json.loads(config["data"]["analysis.json"])
    return spec


@pytest.mark.parametrize("scenario", list(ANALYSED))
def test_analysis_config_map_has_the_contract_shape(rendered: Render, scenario: str) -> None:
    r = rendered(scenario)
    spec = spec_of(r)
    analysis = r.values["rollout"]["analysis"]
    assert set(spec) == {"trackLabel", "metrics", "evidence"}
    assert spec["trackLabel"] == ANALYSED[scenario]
    assert [m["name"] for m in spec["metrics"]] == ["success-rate", "latency-p95", "prediction-shift"]
    for metric in spec["metrics"]:
        assert set(metric) == METRIC_KEYS
        assert metric["successCondition"].startswith("len(result) > 0 && result[0] ")
        assert (metric["interval"], metric["count"], metric["initialDelay"]) == (
            analysis["interval"],
            analysis["count"],
            analysis["initialDelay"],
        )
        assert (metric["failureLimit"], metric["consecutiveErrorLimit"]) == (
            analysis["failureLimit"],
            analysis["consecutiveErrorLimit"],
        )
        assert f'{spec["trackLabel"]}="{{{{args.candidate-track}}}}"' in metric["query"]
        assert "model_version" not in metric["query"]
    evidence = spec["evidence"]
    assert evidence["minRequests"] == analysis["minRequests"] == 200
    assert evidence["minMeasurements"] == analysis["minMeasurements"] == 3
    assert evidence["requestsQuery"] == (
        'sum(increase(tabula_http_requests_total{job="'
        + r.one(
            "Service",
            next(
                s["metadata"]["name"]
                for s in r.of_kind("Service")
                if s["metadata"]["name"].endswith("-metrics")
            ),
        )["metadata"]["name"]
        + f'", namespace="prod", model_name="housing-price", {spec["trackLabel"]}="{{{{args.track}}}}", '
        + 'route=~"/predict.*|/v2/models/.*/infer"}[{{args.range}}]))'
    )


@pytest.mark.parametrize("scenario", ["default", "hpa", "monitoring-off"])
def test_no_analysis_without_a_release_strategy(rendered: Render, scenario: str) -> None:
    names = [c["metadata"]["name"] for c in rendered(scenario).of_kind("ConfigMap")]
    assert not [n for n in names if n.endswith("-analysis")]


@pytest.mark.parametrize("scenario", ["canary", "blue-green", "argo-canary-nginx"])
def test_analysis_template_runs_the_config_maps_metrics(rendered: Render, scenario: str) -> None:
    r = rendered(scenario)
    spec = spec_of(r)
    template = r.one("AnalysisTemplate", "tabula-analysis")
    assert template["spec"]["args"] == [{"name": "candidate-track"}, {"name": "stable-track"}]
    prometheus = [m for m in template["spec"]["metrics"] if "prometheus" in m["provider"]]
    assert len(prometheus) == len(spec["metrics"])
    for rendered_metric, metric in zip(prometheus, spec["metrics"], strict=True):
        assert rendered_metric["name"] == metric["name"]
        assert rendered_metric["provider"]["prometheus"]["query"].strip() == metric["query"].strip()
        assert rendered_metric["successCondition"] == metric["successCondition"]
        assert rendered_metric["interval"] == metric["interval"]
        assert rendered_metric["failureLimit"] == metric["failureLimit"]
        assert rendered_metric["consecutiveErrorLimit"] == metric["consecutiveErrorLimit"]
        assert rendered_metric.get("count", 0) == metric["count"]


def test_analysis_values_reach_the_config_map(helm: str, tmp_path: Path) -> None:
    overrides = tmp_path / "analysis-values.yaml"
    analysis = {
        "minRequests": 500,
        "minMeasurements": 4,
        "successRate": {"min": 0.95},
        "latency": {"enabled": False},
    }
    overrides.write_text(yaml.safe_dump({"rollout": {"analysis": analysis}}))
    result = render([scenario_file("native-canary"), overrides])
    assert result.returncode == 0, result.stderr
    (config,) = [
        d
        for d in yaml.safe_load_all(result.stdout)
        if d and d["kind"] == "ConfigMap" and d["metadata"]["name"] == "tabula-analysis"
    ]
    spec = json.loads(config["data"]["analysis.json"])
    assert (spec["evidence"]["minRequests"], spec["evidence"]["minMeasurements"]) == (500, 4)
    assert [m["name"] for m in spec["metrics"]] == ["success-rate", "prediction-shift"]
    assert spec["metrics"][0]["successCondition"] == "len(result) > 0 && result[0] >= 0.95"


@pytest.mark.parametrize(
    ("set_values", "message"),
    [
        (["rollout.analysis.minRequests=0"], "schema"),
        (["rollout.analysis.minMeasurements=0"], "schema"),
        (["rollout.analysis.count=0", "rollout.analysis.load.runTime=10m"], "finite number of times"),
        (["rollout.analysis.count=0"], "load.runTime is required when rollout.analysis.count is 0"),
        (["rollout.analysis.load.requestsPerSecond=0"], "schema"),
        (["rollout.analysis.load.runTime=ten-minutes"], "schema"),
    ],
)
def test_bad_analysis_values_are_refused(helm: str, set_values: list[str], message: str) -> None:
    result = render([scenario_file("native-canary")], set_values)
    assert result.returncode != 0
    assert message in result.stderr
