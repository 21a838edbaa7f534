"""The shadow stage's driver (release/drivers/shadow.py) outside the loop: which driver a release gets,
``tabula rollout status`` lines through the real CLI and helm, abort/promote as the Helm upgrades they
make (recorded by the fake Helm), and what it refuses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from release.cluster import Cluster
from release.config import ReleaseSettings
from release.drivers import driver_for, installed_driver
from release.drivers.argo import ArgoBlueGreen
from release.drivers.shadow import ShadowStage
from release.errors import ReleaseError
from release.kube import Kube
from tests.unit.release.fake_helm import CHART_DEFAULTS
from tests.unit.release.fake_kube import FakeKube
from tests.unit.release.test_native import cluster, deployment

pytestmark = pytest.mark.unit

REPOSITORY = "localhost/tabula-service"
SHADOWING: dict[str, Any] = {
    "image": {"repository": REPOSITORY, "tag": "1-aaa"},
    "rollout": {
        "strategy": "canary",
        "provider": "native",
        "shadow": {"enabled": True, "tag": "2-bbb", "modelVersion": "2", "sampleRate": 0.25},
    },
}


def test_a_release_with_a_shadow_track_is_driven_by_the_shadow_stage_first(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    target, _ = cluster(fake, settings, kube, SHADOWING)
    assert installed_driver(target).mode == "shadow+canary/native"
    stopped = {**SHADOWING, "rollout": {**SHADOWING["rollout"], "shadow": {"enabled": True, "tag": ""}}}
    assert installed_driver(cluster(fake, settings, kube, stopped)[0]).mode == "canary/native"
    ahead = driver_for(target, SHADOWING, "shadow+blueGreen", "argo")
    assert isinstance(ahead, ShadowStage)
    assert isinstance(ahead.live, ArgoBlueGreen)
    assert driver_for(target, SHADOWING, "shadow", "argo").mode == "shadow"


def test_rollout_status_shows_the_shadow_stage(
    fake: FakeKube, kubeconfig: Path, helm_binary: str, tmp_path: Path
) -> None:
    fake.install_helm_release("tabula", 3, CHART_DEFAULTS, SHADOWING)
    deployment(fake, "tabula", f"{REPOSITORY}:1-aaa", available=2)
    deployment(fake, "tabula-shadow", f"{REPOSITORY}:2-bbb", available=1, wanted=1)
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
        f"  Deployment tabula: 2/2 available, image {REPOSITORY}:1-aaa",
        "  no canary track",
        (
            "  shadow v2 (2-bbb): answers 25% of the stable pods' prediction requests, copied after they "
            "were answered; nobody sees its answers"
        ),
        f"  Deployment tabula-shadow: 1/1 available, image {REPOSITORY}:2-bbb",
    ]


def test_aborting_removes_the_shadow_and_a_shadow_is_never_promoted(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    target, helm = cluster(fake, settings, kube, SHADOWING)
    with pytest.raises(ReleaseError, match="a shadow is never promoted"):
        installed_driver(target).promote(full=False)
    assert installed_driver(target).abort() == (
        "shadow removed: the stable pods mirror nothing (Helm revision 2)"
    )
    assert helm.calls == [("upgrade", {"rollout": {"shadow": {"tag": "", "modelVersion": ""}}})]
    assert installed_driver(target).mode == "canary/native"


def test_the_shadow_stage_needs_the_mirror_mounted_and_the_releases_repository(
    fake: FakeKube, settings: ReleaseSettings, kube: Kube
) -> None:
    off = {**SHADOWING, "rollout": {"strategy": "canary", "provider": "native"}}
    target, helm = cluster(fake, settings, kube, off)
    stage = driver_for(target, target.installed_values(), "shadow+canary", "native")
    with pytest.raises(ReleaseError, match=r"rollout.shadow.enabled is false: turn it on first"):
        stage.deploy_candidate(f"{REPOSITORY}:2-bbb", "2")
    target, helm = cluster(fake, settings, kube, SHADOWING)
    stage = driver_for(target, target.installed_values(), "shadow+canary", "native")
    with pytest.raises(ReleaseError, match="the shadow runs from the release's image repository"):
        stage.deploy_candidate("elsewhere/tabula-service:3-ccc", "3")
    assert stage.deploy_candidate(f"{REPOSITORY}:2-bbb", "2") is None  # already the shadow
    assert stage.deploy_candidate(f"{REPOSITORY}:3-ccc", "3") == 2
    assert helm.calls == [("upgrade", {"rollout": {"shadow": {"tag": "3-ccc", "modelVersion": "3"}}})]


@pytest.mark.parametrize(
    ("args", "strategy", "said"),
    [
        (["--shadow", "--strategy", "blueGreen"], "shadow+blueGreen", "released v2"),
        (["--strategy", "shadow"], "shadow", "v2 passed its shadow stage"),
        (["--shadow", "--strategy", "shadow"], "shadow", "v2 passed its shadow stage"),
        ([], "canary", "released v2"),
    ],
)
def test_the_release_command_puts_the_shadow_stage_first(
    fake: FakeKube,
    kubeconfig: Path,
    helm_binary: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    strategy: str,
    said: str,
) -> None:
    import release.loop

    requests: list[release.loop.ReleaseRequest] = []

    def run(cluster: Cluster, training: Any, request: release.loop.ReleaseRequest) -> str:
        del cluster, training
        requests.append(request)
        return "2"

    monkeypatch.setattr(release.loop, "release", run)
    env = {
        "KUBECONFIG": str(kubeconfig),
        "TABULA_RELEASE_HELM_BINARY": helm_binary,
        "HOME": str(tmp_path),
        "PATH": os.environ["PATH"],
    }
    command = ["release", *args, "--provider", "native", "--image", f"{REPOSITORY}:2-bbb"]
    result = CliRunner().invoke(app, command, env=env)
    assert (result.exit_code, result.stderr) == (0, ""), result.stdout
    assert [(r.strategy, r.provider) for r in requests] == [(strategy, "native")]
    assert result.stdout.splitlines()[-1] == said
