"""The exact helm argv, its flags checked by the real helm, and the values each step gives the chart."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from release import chart
from release.analysis import MeasurementError, Metric, analysis_spec, metrics_of, seconds
from release.errors import ReleaseError
from release.helm import Helm, explain
from release.loop import candidate_overrides, native_promotion_overrides, serving_overrides
from tests.unit.release.fake_helm import CHART_DEFAULTS

pytestmark = pytest.mark.unit

CHART = Path("charts/housing")


def render(helm: Helm, overrides: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    objects = helm.template("housing", CHART, {}, [], overrides)
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def image(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


def test_upgrade_argv_is_exact(helm_binary: str) -> None:
    helm = Helm(helm_binary, "housing", kube_context="kind-housing")
    argv = helm.upgrade_argv("housing", CHART, [Path("prod.yaml"), Path("scratch/overrides.yaml")])
    assert argv == [
        helm_binary, "upgrade", "--install", "housing", "charts/housing",
        "--namespace", "housing", "--kube-context", "kind-housing",
        "--create-namespace", "--reset-then-reuse-values",
        "--values", "prod.yaml", "--values", "scratch/overrides.yaml",
        "--timeout", "900s", "--output", "json",
    ]  # fmt: skip


def test_every_upgrade_flag_exists_in_the_real_helm(helm_binary: str) -> None:
    usage = subprocess.run(
        [helm_binary, "upgrade", "--help"], capture_output=True, text=True, check=True
    ).stdout
    argv = Helm(helm_binary, "housing", kube_context="ctx").upgrade_argv("housing", CHART, [Path("x.yaml")])
    flags = {arg for arg in argv if arg.startswith("--")}
    assert flags == {
        "--install", "--namespace", "--kube-context", "--create-namespace", "--reset-then-reuse-values",
        "--values", "--timeout", "--output",
    }  # fmt: skip
    for flag in flags:
        assert f"{flag} " in usage or f"{flag}=" in usage or f"{flag}\n" in usage, flag


def test_helm_errors_become_one_line_with_a_hint() -> None:
    stderr = 'walk.go:74: found a link\nError: UPGRADE FAILED: secrets is forbidden: User "dev" cannot list\n'
    assert explain(stderr) == (
        'Error: UPGRADE FAILED: secrets is forbidden: User "dev" cannot list '
        "(RBAC: the current kube user lacks this permission)"
    )
    assert "a CRD is missing" in explain(
        'Error: no matches for kind "Rollout" in version "argoproj.io/v1alpha1"'
    )


@pytest.mark.parametrize(
    ("values", "release", "expected"),
    [
        ({}, "housing", "housing"),
        ({}, "prod", "prod-housing"),
        ({"fullnameOverride": "svc"}, "prod", "svc"),
        ({"nameOverride": "price"}, "prod", "prod-price"),
    ],
)
def test_fullname_matches_the_chart(helm: Helm, values: dict[str, Any], release: str, expected: str) -> None:
    assert chart.fullname(values, release) == expected
    objects = helm.template(release, CHART, {}, [], values | {"image": {"tag": "1-a"}})
    assert ("Deployment", expected) in {(obj["kind"], obj["metadata"]["name"]) for obj in objects}


def test_argo_canary_release_values_render_the_new_image_against_the_stable_version(helm: Helm) -> None:
    current = chart.merge(CHART_DEFAULTS, {"image": {"tag": "1-aaa"}, "rollout": {"strategy": "canary"}})
    overrides = candidate_overrides(current, "localhost/housing-service:2-bbb", "2", "canary", "argo")
    rendered = render(helm, chart.merge({"image": {"tag": "1-aaa"}}, overrides))
    rollout = rendered[("Rollout", "housing")]
    assert image(rollout) == "localhost/housing-service:2-bbb"
    args = {a["name"]: a["valueFrom"] for a in rollout["spec"]["strategy"]["canary"]["analysis"]["args"]}
    assert args == {
        "candidate-track": {"podTemplateHashValue": "Latest"},
        "stable-track": {"podTemplateHashValue": "Stable"},
    }


def test_native_canary_release_then_promotion(helm: Helm) -> None:
    installed = {"image": {"repository": "localhost/housing-service", "tag": "1-aaa"}}
    installed |= {"rollout": {"strategy": "canary", "provider": "native"}}
    current = chart.merge(CHART_DEFAULTS, installed)
    started = chart.merge(
        installed, candidate_overrides(current, "localhost/housing-service:2-bbb", "2", "canary", "native")
    )
    rendered = render(helm, started)
    assert image(rendered[("Deployment", "housing")]) == "localhost/housing-service:1-aaa"
    assert image(rendered[("Deployment", "housing-canary")]) == "localhost/housing-service:2-bbb"
    promoted = chart.merge(
        started,
        native_promotion_overrides(
            chart.merge(CHART_DEFAULTS, started), "localhost/housing-service:2-bbb", "2"
        ),
    )
    rendered = render(helm, promoted)
    assert image(rendered[("Deployment", "housing")]) == "localhost/housing-service:2-bbb"
    assert ("Deployment", "housing-canary") not in rendered
    assert chart.workload(chart.merge(CHART_DEFAULTS, promoted), "housing").model_version == "2"


def test_native_blue_green_release_then_promotion(helm: Helm) -> None:
    installed = {"image": {"repository": "localhost/housing-service", "tag": "1-aaa"}}
    installed |= {"rollout": {"strategy": "blueGreen", "provider": "native"}}
    current = chart.merge(CHART_DEFAULTS, installed)
    started = chart.merge(
        installed, candidate_overrides(current, "localhost/housing-service:2-bbb", "2", "blueGreen", "native")
    )
    rendered = render(helm, started)
    assert image(rendered[("Deployment", "housing-blue")]) == "localhost/housing-service:1-aaa"
    assert image(rendered[("Deployment", "housing-green")]) == "localhost/housing-service:2-bbb"
    assert rendered[("Service", "housing")]["spec"]["selector"]["housing.io/track"] == "blue"
    promoted = chart.merge(
        started,
        native_promotion_overrides(
            chart.merge(CHART_DEFAULTS, started), "localhost/housing-service:2-bbb", "2"
        ),
    )
    rendered = render(helm, promoted)
    assert rendered[("Service", "housing")]["spec"]["selector"]["housing.io/track"] == "green"
    # The old colour keeps its version for a fast switch back.
    assert image(rendered[("Deployment", "housing-blue")]) == "localhost/housing-service:1-aaa"
    assert chart.workload(chart.merge(CHART_DEFAULTS, promoted), "housing").model_version == "2"


def test_plain_deploy_values(helm: Helm) -> None:
    overrides = serving_overrides(None, "ghcr.io/x/housing-service:3-ccc", "3", "rollingUpdate", "argo")
    rendered = render(helm, overrides)
    assert image(rendered[("Deployment", "housing")]) == "ghcr.io/x/housing-service:3-ccc"


@pytest.mark.parametrize(
    ("values", "track_label"),
    [
        ({"rollout": {"strategy": "canary", "provider": "native"}}, "housing_io_track"),
        ({"rollout": {"strategy": "blueGreen", "provider": "native"}}, "housing_io_track"),
        ({"rollout": {"strategy": "canary", "provider": "argo"}}, "rollouts_pod_template_hash"),
    ],
)
def test_native_analysis_reads_the_charts_analysis_config_map(
    helm: Helm, values: dict[str, Any], track_label: str
) -> None:
    objects = helm.template("housing", CHART, {}, [], chart.merge({"image": {"tag": "2-b"}}, values))
    spec = analysis_spec(objects, "housing-analysis")
    assert spec is not None
    assert spec["trackLabel"] == track_label
    metrics = metrics_of(spec, {"candidate-track": "canary", "stable-track": "stable"})
    assert [metric.name for metric in metrics] == ["success-rate", "latency-p95", "prediction-shift"]
    assert all("{{args." not in metric.query for metric in metrics)
    assert f'{track_label}="canary"' in metrics[0].query
    assert f'{track_label}="stable"' in metrics[2].query
    success, latency = metrics[0], metrics[1]
    assert success.passes([0.995])
    assert [success.passes(value) for value in ([0.98], [], [float("nan")])] == [False, False, False]
    assert latency.passes([0.1])
    assert not latency.passes([0.3])
    assert (success.interval, success.count, success.failure_limit, success.initial_delay) == (60, 5, 1, 30)
    assert analysis_spec(objects, "housing-other") is None


def condition(text: str) -> Metric:
    return Metric("m", "q", text, 1, 1, 0, 0)


# The forms housing.analysisSpec emits, and Argo's bare form, judged as utils/evaluate/evaluate.go
# judges them (docs/features/analysis.md, "Empty array": the guard makes [] a failure, not an error).
CONDITIONS: list[tuple[str, list[float], bool | None]] = [
    ("len(result) > 0 && result[0] >= 0.99", [0.995], True),
    ("len(result) > 0 && result[0] >= 0.99", [0.99], True),
    ("len(result) > 0 && result[0] >= 0.99", [0.5], False),
    ("len(result) > 0 && result[0] >= 0.99", [], False),
    ("len(result) > 0 && result[0] >= 0.99", [float("nan")], False),
    ("len(result) > 0 && result[0] <= 0.25", [0.1], True),
    ("len(result) > 0 && result[0] <= 0.25", [float("inf")], False),
    ("len(result) > 0 && result[0] <= 0.25", [], False),
    ("result[0] >= 0.5", [0.7, 0.1], True),
    ("result[0] >= 0.5", [], None),  # None: a measurement error, as Argo's index out of range
    ("result[1] < 2", [9, 1], True),
    ("len(result) == 2", [1, 2], True),
]


@pytest.mark.parametrize(("text", "result", "expected"), CONDITIONS)
def test_success_conditions_are_judged_like_argo(
    text: str, result: list[float], expected: bool | None
) -> None:
    if expected is None:
        with pytest.raises(MeasurementError):
            condition(text).passes(result)
    else:
        assert condition(text).passes(result) is expected


@pytest.mark.parametrize(
    "text",
    [
        "result[0] >= 0.5 || true",
        "asInt(result[0]) > 1",
        "result > 0",
        "",
        "len(result) > 0 && isNaN(result[0])",
    ],
)
def test_unsupported_conditions_are_refused(text: str) -> None:
    """Refused whatever the result, even when an earlier term would already be false."""
    for result in ([1.0], []):
        with pytest.raises(ReleaseError, match="unsupported successCondition"):
            condition(text).passes(result)


def test_durations() -> None:
    assert [seconds(value) for value in ("30s", "1m30s", "2m", "1h", 15)] == [30, 90, 120, 3600, 15]
    with pytest.raises(Exception, match="cannot read the duration"):
        seconds("soon")
    assert not Metric("m", "q", "result[0] >= 0.5", 1, 1, 0, 0).passes([0.4])
