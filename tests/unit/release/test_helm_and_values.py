"""The exact helm argv, its flags checked by the real helm, and the values each step gives the chart."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from release import chart
from release.cluster import Cluster
from release.config import ReleaseSettings
from release.drivers.argo import ArgoCanary
from release.drivers.native import NativeBlueGreen, NativeCanary
from release.helm import Helm, explain
from release.kube import Kube
from tests.unit.release.fake_helm import CHART_DEFAULTS

pytestmark = pytest.mark.unit

CHART = Path("charts/tabula")


def render(helm: Helm, overrides: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    objects = helm.template("tabula", CHART, {}, [], overrides)
    return {(obj["kind"], obj["metadata"]["name"]): obj for obj in objects}


def image(obj: dict[str, Any]) -> str:
    return str(obj["spec"]["template"]["spec"]["containers"][0]["image"])


@pytest.fixture
def cluster(settings: ReleaseSettings, helm: Helm, kube: Kube) -> Cluster:
    return Cluster(settings, helm, kube, lambda _: None)


def test_upgrade_argv_is_exact(helm_binary: str) -> None:
    helm = Helm(helm_binary, "tabula", kube_context="kind-tabula")
    argv = helm.upgrade_argv("tabula", CHART, [Path("prod.yaml"), Path("scratch/overrides.yaml")])
    assert argv == [
        helm_binary, "upgrade", "--install", "tabula", "charts/tabula",
        "--namespace", "tabula", "--kube-context", "kind-tabula",
        "--create-namespace", "--reset-then-reuse-values",
        "--values", "prod.yaml", "--values", "scratch/overrides.yaml",
        "--timeout", "900s", "--output", "json",
    ]  # fmt: skip


def test_every_upgrade_flag_exists_in_the_real_helm(helm_binary: str) -> None:
    usage = subprocess.run(
        [helm_binary, "upgrade", "--help"], capture_output=True, text=True, check=True
    ).stdout
    argv = Helm(helm_binary, "tabula", kube_context="ctx").upgrade_argv("tabula", CHART, [Path("x.yaml")])
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
        ({}, "tabula", "tabula"),
        ({}, "prod", "prod-tabula"),
        ({"fullnameOverride": "svc"}, "prod", "svc"),
        ({"nameOverride": "price"}, "prod", "prod-price"),
    ],
)
def test_fullname_matches_the_chart(helm: Helm, values: dict[str, Any], release: str, expected: str) -> None:
    assert chart.fullname(values, release) == expected
    objects = helm.template(release, CHART, {}, [], values | {"image": {"tag": "1-a"}})
    assert ("Deployment", expected) in {(obj["kind"], obj["metadata"]["name"]) for obj in objects}


def test_argo_canary_release_values_render_the_new_image_and_no_stable_version(
    helm: Helm, cluster: Cluster
) -> None:
    installed: dict[str, Any] = {"image": {"tag": "1-aaa"}, "rollout": {"strategy": "canary"}}
    driver = ArgoCanary(cluster, chart.merge(CHART_DEFAULTS, installed))
    overrides = driver.overrides("localhost/tabula-service:2-bbb", "2")
    assert "stableModelVersion" not in str(overrides)  # CONTRACT.md: tracks come from pods
    rendered = render(helm, chart.merge(installed, overrides))
    assert image(rendered[("Rollout", "tabula")]) == "localhost/tabula-service:2-bbb"


def test_native_canary_release_then_promotion(helm: Helm, cluster: Cluster) -> None:
    installed = {"image": {"repository": "localhost/tabula-service", "tag": "1-aaa"}}
    installed |= {"rollout": {"strategy": "canary", "provider": "native"}}
    current = chart.merge(CHART_DEFAULTS, installed)
    started = chart.merge(
        installed, NativeCanary(cluster, current).candidate_overrides("localhost/tabula-service:2-bbb", "2")
    )
    rendered = render(helm, started)
    assert image(rendered[("Deployment", "tabula")]) == "localhost/tabula-service:1-aaa"
    assert image(rendered[("Deployment", "tabula-canary")]) == "localhost/tabula-service:2-bbb"
    promoted = chart.merge(
        started, NativeCanary(cluster, current).promotion_overrides(chart.merge(CHART_DEFAULTS, started))
    )
    rendered = render(helm, promoted)
    assert image(rendered[("Deployment", "tabula")]) == "localhost/tabula-service:2-bbb"
    assert ("Deployment", "tabula-canary") not in rendered
    assert chart.workload(chart.merge(CHART_DEFAULTS, promoted), "tabula").model_version == "2"


def test_native_blue_green_release_then_promotion(helm: Helm, cluster: Cluster) -> None:
    installed = {"image": {"repository": "localhost/tabula-service", "tag": "1-aaa"}}
    installed |= {"rollout": {"strategy": "blueGreen", "provider": "native"}}
    current = chart.merge(CHART_DEFAULTS, installed)
    started = chart.merge(
        installed,
        NativeBlueGreen(cluster, current).candidate_overrides("localhost/tabula-service:2-bbb", "2"),
    )
    rendered = render(helm, started)
    assert image(rendered[("Deployment", "tabula-blue")]) == "localhost/tabula-service:1-aaa"
    assert image(rendered[("Deployment", "tabula-green")]) == "localhost/tabula-service:2-bbb"
    assert rendered[("Service", "tabula")]["spec"]["selector"]["tabula.io/track"] == "blue"
    promoted = chart.merge(
        started, NativeBlueGreen(cluster, current).promotion_overrides(chart.merge(CHART_DEFAULTS, started))
    )
    rendered = render(helm, promoted)
    assert rendered[("Service", "tabula")]["spec"]["selector"]["tabula.io/track"] == "green"
    # The old colour keeps its version for a fast switch back.
    assert image(rendered[("Deployment", "tabula-blue")]) == "localhost/tabula-service:1-aaa"
    assert chart.workload(chart.merge(CHART_DEFAULTS, promoted), "tabula").model_version == "2"
