"""``tabula rollout`` in native mode (no Argo): status read through the real CLI, real helm and the fake
API server; the native drivers' promote, abort and retry as the Helm upgrades they make, recorded by
the fake Helm."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from release import chart
from release.cluster import Cluster
from release.config import ReleaseSettings
from release.drivers import installed_driver
from release.errors import ReleaseError
from release.helm import Helm
from release.kube import Kube
from tests.fakes.clock import ManualClock
from tests.fakes.cluster import ready_deployment, selected_colour, serve_chart
from tests.unit.release.fake_helm import CHART_DEFAULTS, RecordingFakeHelm
from tests.unit.release.fake_kube import FakeKube

pytestmark = pytest.mark.unit

DEPLOYMENTS = "/apis/apps/v1/namespaces/tabula/deployments"
CHART = Path("charts/tabula")
CANARY = {
    "image": {"repository": "localhost/tabula-service", "tag": "1-aaa"},
    "rollout": {
        "strategy": "canary",
        "provider": "native",
        "native": {"canary": {"tag": "2-bbb", "modelVersion": "2"}},
    },
}
BLUE_GREEN: dict[str, Any] = {
    "image": {"repository": "localhost/tabula-service", "tag": "1-aaa"},
    "rollout": {
        "strategy": "blueGreen",
        "provider": "native",
        "native": {"blueGreen": {"activeColor": "blue", "blueTag": "1-aaa", "greenTag": "2-bbb"}},
    },
}


def deployment(fake: FakeKube, name: str, image: str, available: int, wanted: int = 2) -> None:
    fake.put(
        f"{DEPLOYMENTS}/{name}",
        {
            "metadata": {"name": name, "generation": 1},
            "spec": {
                "replicas": wanted,
                "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                "template": {"spec": {"containers": [{"name": "service", "image": image}]}},
            },
            "status": {"observedGeneration": 1, "replicas": wanted, "availableReplicas": available},
        },
    )


def test_status_of_a_native_canary_shows_tracks_and_weight(
    fake: FakeKube, kubeconfig: Path, helm_binary: str, tmp_path: Path
) -> None:
    fake.install_helm_release("tabula", 3, CHART_DEFAULTS, CANARY)
    deployment(fake, "tabula", "localhost/tabula-service:1-aaa", available=3, wanted=3)
    deployment(fake, "tabula-canary", "localhost/tabula-service:2-bbb", available=1, wanted=1)
    env = {
        "KUBECONFIG": str(kubeconfig),
        "TABULA_RELEASE_HELM_BINARY": helm_binary,
        "TABULA_RELEASE_NAMESPACE": "tabula",
        "HOME": str(tmp_path),
        "PATH": os.environ["PATH"],
    }
    result = CliRunner().invoke(app, ["rollout", "status"], env=env)
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "canary/native release tabula: users get v1 (1-aaa)",
        "  Deployment tabula: 3/3 available, image localhost/tabula-service:1-aaa",
        "  Deployment tabula-canary: 1/1 available, image localhost/tabula-service:2-bbb",
        "  canary 2-bbb: weight 25% (1/4 available pods)",
    ]


def cluster(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube, installed: dict[str, Any]
) -> tuple[Cluster, RecordingFakeHelm]:
    fake.serve_group(
        "monitoring.coreos.com/v1", {"ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}
    )
    helm = RecordingFakeHelm(Helm.from_settings(settings), installed)
    return Cluster(settings, helm, kube, lambda _: None), helm


def test_promoting_a_native_canary_makes_it_the_image_and_drops_the_track(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    target, helm = cluster(fake, settings, kube, CANARY)
    message = installed_driver(target).promote(full=False)
    assert message == "promoted localhost/tabula-service:2-bbb (Helm revision 2)"
    [(_, overrides)] = helm.calls
    assert overrides == {
        "image": {"repository": "localhost/tabula-service", "tag": "2-bbb"},
        "model": {"version": "2"},
        "rollout": {"native": {"canary": {"tag": "", "modelVersion": ""}}},
    }


def test_aborting_a_native_canary_removes_its_track(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    target, helm = cluster(fake, settings, kube, CANARY)
    message = installed_driver(target).abort()
    assert message == "canary track removed: every user stays on the stable version (Helm revision 2)"
    assert helm.user_values()["image"]["tag"] == "1-aaa"
    assert helm.user_values()["rollout"]["native"]["canary"] == {"tag": "", "modelVersion": ""}
    # Nothing is left to promote afterwards.
    with pytest.raises(ReleaseError, match="there is no canary or preview to promote"):
        installed_driver(target).promote(full=False)


def test_blue_green_abort_clears_the_preview(fake: FakeKube, settings: ReleaseSettings, kube: Kube) -> None:
    target, helm = cluster(fake, settings, kube, BLUE_GREEN)
    assert installed_driver(target).abort() == (
        "preview colour green cleared: every user stays on the stable version (Helm revision 2)"
    )
    assert helm.user_values()["rollout"]["native"]["blueGreen"] == {
        "activeColor": "blue",
        "blueTag": "1-aaa",
        "greenTag": "",
    }


def test_retrying_a_native_release_runs_the_upgrade_again(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    target, helm = cluster(fake, settings, kube, CANARY)
    message = installed_driver(target).retry()
    assert message == "upgraded tabula again with its values (Helm revision 2)"
    assert helm.calls == [("upgrade", {})]
    assert helm.user_values() == CANARY


# --- native blue/green: the switch never drops capacity (issue 10, item 6) -------------------------------
# Replicas 3: blue serves 3 pods, green (2-bbb) is the 1-pod preview; the chart's steps, in
# charts/tabula/values.yaml (previewReplicas, scaleDownDelaySeconds) and its guard
# templates/_checks.tpl tabula.checkBlueGreenSwitch.
SWITCHING: dict[str, Any] = {**BLUE_GREEN, "replicaCount": 3}


def served_blue_green(
    fake: FakeKube,
    settings: ReleaseSettings,
    kube: Kube,
    installed: dict[str, Any],
    scale_up_seconds: float = 0.0,
) -> tuple[Cluster, RecordingFakeHelm, list[str], list[tuple[str, int]], ManualClock]:
    """A Cluster whose every Helm change lands in the fake API as the real chart renders it; after each
    change, records the colour the main Service selects and that colour's ready pods.

    ``scale_up_seconds``: a Deployment given more replicas keeps its old ready count for that many real
    seconds (new pods start and load their model), whatever Helm applies meanwhile."""
    lines: list[str] = []
    target, helm = cluster(fake, settings, kube, installed)
    target.log = lines.append
    clock = ManualClock()
    target.clock = clock
    serve_chart(fake, helm, "tabula", clock, lambda values: helm.template("tabula", CHART, values, [], {}))
    applied = helm.on_change
    assert applied is not None
    serving: list[tuple[str, int]] = []

    starting: dict[str, int] = {}  # Deployment path -> ready pods while its new pods start

    def record(values: dict[str, Any]) -> None:
        before = {path: obj["spec"].get("replicas", 1) for path, obj in deployments(fake)}
        applied(values)
        for path, obj in deployments(fake):
            if scale_up_seconds and path in before and obj["spec"].get("replicas", 1) > before[path]:
                starting[path] = before[path]
                threading.Timer(scale_up_seconds, started, [path]).start()
            if path in starting:
                obj["status"] |= {"readyReplicas": starting[path], "availableReplicas": starting[path]}
        serving.append(selected_colour(fake))
        lines.append(f"[serving {serving[-1][0]} with {serving[-1][1]} ready pods]")

    def started(path: str) -> None:
        with fake.lock:
            del starting[path]
            ready_deployment(fake, fake.objects[path], clock)

    helm.on_change = record
    serving.append(selected_colour(fake))
    return target, helm, lines, serving, clock


def deployments(fake: FakeKube) -> list[tuple[str, dict[str, Any]]]:
    return [(path, obj) for path, obj in fake.objects.items() if path.startswith(f"{DEPLOYMENTS}/")]


def blue_green_of(helm: RecordingFakeHelm) -> dict[str, Any]:
    return dict(helm.user_values()["rollout"]["native"]["blueGreen"])


def test_blue_green_promotion_scales_the_preview_up_then_switches_then_scales_the_old_colour_down(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    target, helm, lines, serving, clock = served_blue_green(fake, settings, kube, SWITCHING)
    assert serving == [("blue", 3)]
    driver = installed_driver(target)

    message = driver.promote(full=False)
    switched_at = clock.now()
    driver.settle()

    assert message == (
        "promoted localhost/tabula-service:2-bbb (Helm revision 3): Service tabula selects green (3 pods); "
        "blue keeps 3 pods for an instant rollback"
    )
    scale_up, switch, scale_down = (overrides for _, overrides in helm.calls)
    assert scale_up == {"rollout": {"native": {"blueGreen": {"previewReplicas": 3}}}}
    assert switch == {
        "image": {"repository": "localhost/tabula-service", "tag": "2-bbb"},
        "model": {"version": "2"},
        "rollout": {"native": {"blueGreen": {"activeColor": "green", "previewReplicas": 3}}},
    }
    assert scale_down == {"rollout": {"native": {"blueGreen": {"previewReplicas": 1}}}}
    # At every step the Service's colour had the full 3 ready pods: blue, blue, green, green.
    assert serving == [("blue", 3), ("blue", 3), ("green", 3), ("green", 3)]
    # Each step is an upgrade followed by a wait; the scale-down only after scaleDownDelaySeconds (60).
    green, blue = "localhost/tabula-service:2-bbb", "localhost/tabula-service:1-aaa"
    assert lines == [
        "[serving blue with 3 ready pods]",
        "helm upgrade --install tabula: revision 2 (rollout.native.blueGreen.previewReplicas=3)",
        f"Deployment tabula-green is ready (3/3 available, image {green})",
        "[serving green with 3 ready pods]",
        (
            "helm upgrade --install tabula: revision 3 (image.repository=localhost/tabula-service, "
            "image.tag=2-bbb, model.version=2, rollout.native.blueGreen.activeColor=green, "
            "rollout.native.blueGreen.previewReplicas=3)"
        ),
        f"Deployment tabula-green is ready (3/3 available, image {green})",
        f"Deployment tabula-blue is ready (3/3 available, image {blue})",
        (
            "blue keeps 3 pods for 60s (rollout.native.blueGreen.scaleDownDelaySeconds): "
            "`tabula rollout undo` switches back at once"
        ),
        "[serving green with 3 ready pods]",
        "helm upgrade --install tabula: revision 4 (rollout.native.blueGreen.previewReplicas=1)",
        "blue scaled down to previewReplicas=1",
    ]
    assert clock.now() - switched_at >= 60
    assert fake.objects[f"{DEPLOYMENTS}/tabula-blue"]["spec"]["replicas"] == 1
    # A second settle has nothing left to do.
    driver.settle()
    assert len(helm.calls) == 3


def test_the_switch_waits_until_the_scaled_up_preview_is_ready(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    """Green's 2 new pods take 0.5 s to become ready: the Service must not switch before."""
    target, _, lines, serving, _ = served_blue_green(fake, settings, kube, SWITCHING, scale_up_seconds=0.5)
    installed_driver(target).promote(full=False)
    assert serving == [("blue", 3), ("blue", 3), ("green", 3)]
    assert "Deployment tabula-green is ready (3/3 available, image localhost/tabula-service:2-bbb)" in lines


def test_an_idle_colour_already_at_full_size_switches_without_a_scale_up(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    at_full_size = chart.merge(SWITCHING, chart.nested("rollout.native.blueGreen.previewReplicas", 3))
    target, helm, _, serving, _ = served_blue_green(fake, settings, kube, at_full_size)
    installed_driver(target).promote(full=False)
    [(_, switch)] = helm.calls
    assert switch["rollout"]["native"]["blueGreen"] == {"activeColor": "green", "previewReplicas": 3}
    assert serving == [("blue", 3), ("green", 3)]


def test_the_preview_is_scaled_to_the_live_size_of_the_active_colour(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    """The active colour runs 5 pods although replicaCount is 3 (an HPA, or `kubectl scale`): 5 it is."""
    target, helm, _, _, _ = served_blue_green(fake, settings, kube, SWITCHING)
    live = fake.objects[f"{DEPLOYMENTS}/tabula-blue"]
    live["spec"]["replicas"] = 5
    live["status"] |= {"replicas": 5, "updatedReplicas": 5, "readyReplicas": 5, "availableReplicas": 5}
    installed_driver(target).promote(full=False)
    assert helm.calls[0] == ("upgrade", {"rollout": {"native": {"blueGreen": {"previewReplicas": 5}}}})


def test_a_rollback_within_the_delay_flips_the_service_back_without_a_scale_up(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    target, helm, lines, serving, _ = served_blue_green(fake, settings, kube, SWITCHING)
    driver = installed_driver(target)
    driver.promote(full=False)
    assert serving[-1] == ("green", 3)
    status = driver.status()
    assert status[-2:] == [
        "  active colour green; preview blue: 1-aaa",
        (
            "  blue runs as many pods as green: a switch back is instant; it scales down with "
            "rollout.native.blueGreen.previewReplicas=1"
        ),
    ]

    # `tabula rollout undo` within the delay: the revision before the switch.
    assert installed_driver(target).undo(None) == "helm rollback tabula (previous revision) done"
    assert helm.calls[-1] == ("rollback", None)
    assert blue_green_of(helm)["activeColor"] == "blue"
    assert serving[-1] == ("blue", 3)  # the old colour served at once with every pod it had
    assert all(pods >= 3 for _, pods in serving), serving
    # The delay then passes: activeColor changed, so nothing is scaled down.
    driver.settle()
    assert lines[-1] == "activeColor is blue again: blue keeps its pods"
    assert [call for call, _ in helm.calls] == ["upgrade", "upgrade", "rollback"]


def test_the_loops_roll_back_within_the_delay_serves_the_old_colour_at_full_size(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    target, helm, _, serving, _ = served_blue_green(fake, settings, kube, SWITCHING)
    driver = installed_driver(target)
    driver.promote(full=False)
    driver.roll_back(1, target.deadline())
    assert helm.calls[-1] == ("rollback", 1)
    assert serving == [("blue", 3), ("blue", 3), ("green", 3), ("blue", 3)]
    assert blue_green_of(helm) == BLUE_GREEN["rollout"]["native"]["blueGreen"]
