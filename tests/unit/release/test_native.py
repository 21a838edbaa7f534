"""``housing rollout`` in native mode (no Argo): status read through the real CLI, real helm and the fake
API server; the native drivers' promote, abort and retry as the Helm upgrades they make, recorded by
the fake Helm."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from release.cluster import Cluster
from release.config import ReleaseSettings
from release.drivers import installed_driver
from release.errors import ReleaseError
from release.helm import Helm
from release.kube import Kube
from tests.unit.release.fake_helm import CHART_DEFAULTS, RecordingFakeHelm
from tests.unit.release.fake_kube import FakeKube
from training.cli import app

pytestmark = pytest.mark.unit

DEPLOYMENTS = "/apis/apps/v1/namespaces/housing/deployments"
CANARY = {
    "image": {"repository": "localhost/housing-service", "tag": "1-aaa"},
    "rollout": {
        "strategy": "canary",
        "provider": "native",
        "native": {"canary": {"tag": "2-bbb", "modelVersion": "2"}},
    },
}
BLUE_GREEN = {
    "image": {"repository": "localhost/housing-service", "tag": "1-aaa"},
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
    fake.install_helm_release("housing", 3, CHART_DEFAULTS, CANARY)
    deployment(fake, "housing", "localhost/housing-service:1-aaa", available=3, wanted=3)
    deployment(fake, "housing-canary", "localhost/housing-service:2-bbb", available=1, wanted=1)
    env = {
        "KUBECONFIG": str(kubeconfig),
        "HOUSING_RELEASE_HELM_BINARY": helm_binary,
        "HOUSING_RELEASE_NAMESPACE": "housing",
        "HOME": str(tmp_path),
        "PATH": os.environ["PATH"],
    }
    result = CliRunner().invoke(app, ["rollout", "status"], env=env)
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout.splitlines() == [
        "canary/native release housing: users get v1 (1-aaa)",
        "  Deployment housing: 3/3 available, image localhost/housing-service:1-aaa",
        "  Deployment housing-canary: 1/1 available, image localhost/housing-service:2-bbb",
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
    assert message == "promoted localhost/housing-service:2-bbb (Helm revision 2)"
    [(_, overrides)] = helm.calls
    assert overrides == {
        "image": {"repository": "localhost/housing-service", "tag": "2-bbb"},
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


def test_blue_green_promote_switches_the_colour_and_abort_clears_the_preview(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    target, helm = cluster(fake, settings, kube, BLUE_GREEN)
    promoted = installed_driver(target).promote(full=False)
    assert promoted == "promoted localhost/housing-service:2-bbb (Helm revision 2)"
    assert helm.user_values()["rollout"]["native"]["blueGreen"]["activeColor"] == "green"

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
    assert message == "upgraded housing again with its values (Helm revision 2)"
    assert helm.calls == [("upgrade", {})]
    assert helm.user_values() == CANARY
