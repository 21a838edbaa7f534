"""Load during analysis: the chart itself sends traffic to the candidate while it is analysed.

Argo: a Job metric of the analysis (metricproviders/job/job.go runs it as a Job, deletes it in
Terminate when the run ends). Native: a Job named after the candidate tag, rendered while a candidate
track exists, against the candidate's Service.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from load.config import LoadSettings
from tests.chart.helm import Manifest, Rendered, render, scenario_file

pytestmark = pytest.mark.chart

Render = Callable[[str], Rendered]


def argo_load_job(r: Rendered) -> dict[str, Any]:
    template = r.one("AnalysisTemplate", "tabula-analysis")
    (metric,) = [m for m in template["spec"]["metrics"] if "job" in m["provider"]]
    assert metric["name"] == "load"
    assert metric["failureLimit"] == 0
    job: dict[str, Any] = metric["provider"]["job"]
    return job


def native_load_jobs(objects: list[Manifest]) -> list[Manifest]:
    return [
        o
        for o in objects
        if o["kind"] == "Job" and o["metadata"]["labels"]["app.kubernetes.io/component"] == "analysis-load"
    ]


def options(container: dict[str, Any]) -> dict[str, str]:
    assert container["command"] == ["tabula"]
    assert container["args"][0] == "loadtest"
    return dict(arg.removeprefix("--").split("=", 1) for arg in container["args"][1:])


def load_settings(container: dict[str, Any]) -> LoadSettings:
    """The container's options and environment read by the real `tabula loadtest` settings class."""
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    prefix = LoadSettings.model_config["env_prefix"]
    assert all(name.startswith(prefix) for name in env)
    fields = {name.removeprefix(prefix).lower(): value for name, value in env.items()}
    assert set(fields) <= set(LoadSettings.model_fields), fields
    opts = {key.replace("-", "_"): value for key, value in options(container).items()}
    return LoadSettings.model_validate(opts | fields)


def analysis_seconds(analysis: dict[str, Any]) -> int:
    from release.evidence import seconds

    return int(seconds(analysis["initialDelay"]) + analysis["count"] * seconds(analysis["interval"]))


@pytest.mark.parametrize(
    ("scenario", "service"), [("blue-green", "tabula-preview"), ("argo-canary-nginx", "tabula-canary")]
)
def test_argo_analysis_loads_the_candidate_service_for_its_whole_length(
    rendered: Render, scenario: str, service: str
) -> None:
    r = rendered(scenario)
    job = argo_load_job(r)
    pod = job["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    settings = load_settings(container)
    assert settings.base_url == f"http://{service}.prod.svc:3000"
    assert service in {s["metadata"]["name"] for s in r.of_kind("Service")}
    analysis = r.values["rollout"]["analysis"]
    load = analysis["load"]
    assert settings.run_time_seconds() == analysis_seconds(analysis) + load["marginSeconds"]
    assert job["spec"]["activeDeadlineSeconds"] > settings.run_time_seconds()
    # About requestsPerSecond: each user waits users / rate seconds between requests.
    assert settings.users == load["users"]
    assert (
        settings.wait_min_s == settings.wait_max_s == pytest.approx(load["users"] / load["requestsPerSecond"])
    )
    # Traffic only: the Prometheus metrics judge the candidate, Locust's gates never do.
    assert (settings.max_error_rate, settings.min_rps) == (1.0, 0.0)
    assert settings.p95_ms >= 3_600_000
    # The NetworkPolicy lets the release's own pods in even when the namespace is closed.
    assert {"app.kubernetes.io/name", "app.kubernetes.io/instance"} <= set(pod["metadata"]["labels"])


def test_blue_green_load_ends_with_its_analysis(rendered: Render) -> None:
    """Pre-promotion analysis completes when all its metrics do: a longer load would hold the promotion."""
    r = rendered("blue-green")
    (container,) = argo_load_job(r)["spec"]["template"]["spec"]["containers"]
    # ci/blue-green-values.yaml: count 3 every 1m after 30s, plus the 30s margin.
    assert load_settings(container).run_time_seconds() == 3 * 60 + 30 + 30


@pytest.mark.parametrize(
    ("scenario", "job", "service", "track"),
    [
        ("native-canary", "tabula-load-4-b2c3d4e", "tabula-canary", "canary"),
        ("native-canary-ingress", "tabula-load-4-b2c3d4e", "tabula-canary", "canary"),
        ("native-blue-green", "tabula-load-3-a1b2c3d", "tabula-preview", "blue"),  # green is active
    ],
)
def test_native_load_job_targets_the_candidate_track(
    rendered: Render, scenario: str, job: str, service: str, track: str
) -> None:
    r = rendered(scenario)
    (load_job,) = native_load_jobs(r.objects)
    assert load_job["metadata"]["name"] == job
    assert "ttlSecondsAfterFinished" not in load_job["spec"]
    (container,) = load_job["spec"]["template"]["spec"]["containers"]
    settings = load_settings(container)
    assert settings.base_url == f"http://{service}.prod.svc:3000"
    selector = r.one("Service", service)["spec"]["selector"]
    assert selector["tabula.io/track"] == track
    deployments = [
        d for d in r.of_kind("Deployment") if d["spec"]["selector"]["matchLabels"]["tabula.io/track"] == track
    ]
    assert len(deployments) == 1


@pytest.mark.parametrize(
    ("scenario", "set_values"),
    [
        ("native-canary", ["rollout.native.canary.tag="]),
        (
            "native-blue-green",
            ["rollout.native.blueGreen.blueTag=", "rollout.native.blueGreen.activeColor=green"],
        ),
        ("native-canary", ["rollout.analysis.load.enabled=false"]),
        ("native-canary", ["rollout.analysis.enabled=false"]),
        ("default", []),
    ],
)
def test_no_native_load_without_a_candidate_or_when_off(
    helm: str, scenario: str, set_values: list[str]
) -> None:
    result = render([scenario_file(scenario)], set_values)
    assert result.returncode == 0, result.stderr
    assert not native_load_jobs([d for d in yaml.safe_load_all(result.stdout) if d])


def test_argo_load_can_be_turned_off(helm: str) -> None:
    result = render([scenario_file("blue-green")], ["rollout.analysis.load.enabled=false"])
    assert result.returncode == 0, result.stderr
    (template,) = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "AnalysisTemplate"]
    assert all("prometheus" in m["provider"] for m in template["spec"]["metrics"])


def test_a_new_candidate_tag_is_a_new_job_and_long_tags_fit(helm: str) -> None:
    def job_name(tag: str) -> str:
        result = render([scenario_file("native-canary")], [f"rollout.native.canary.tag={tag}"])
        assert result.returncode == 0, result.stderr
        (job,) = native_load_jobs([d for d in yaml.safe_load_all(result.stdout) if d])
        assert job["metadata"]["annotations"]["tabula.io/candidate-tag"] == tag
        return str(job["metadata"]["name"])

    assert job_name("5-c3d4e5f") == "tabula-load-5-c3d4e5f"
    long_a, long_b = "7-" + "a" * 60 + "1", "7-" + "a" * 60 + "2"
    names = {job_name(long_a), job_name(long_b), job_name("7_Release.Candidate")}
    assert len(names) == 3
    assert all(len(name) <= 63 for name in names)


def test_explicit_run_time_wins(helm: str) -> None:
    result = render([scenario_file("native-canary")], ["rollout.analysis.load.runTime=15m"])
    assert result.returncode == 0, result.stderr
    (job,) = native_load_jobs([d for d in yaml.safe_load_all(result.stdout) if d])
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert load_settings(container).run_time_seconds() == 900
