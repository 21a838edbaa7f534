"""Connection and error handling of the Kubernetes client against the fake API server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from release.config import ReleaseSettings
from release.errors import ReleaseError
from release.helm import Helm
from release.kube import connect
from release.rollouts import Rollouts
from tests.support import free_port
from tests.unit.release.fake_kube import FakeKube

pytestmark = pytest.mark.unit

ARGO = {"Rollout": "rollouts", "AnalysisTemplate": "analysistemplates", "AnalysisRun": "analysisruns"}
MONITORING = {"ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}


def canary_objects(helm: Helm) -> list[dict]:
    return helm.template(
        "tabula",
        Path("charts/tabula"),
        {},
        [],
        {
            "image": {"tag": "2-abc"},
            "rollout": {"strategy": "canary"},
        },
    )


def test_no_kubeconfig_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(
        ReleaseError, match=r"^no Kubernetes context: a current context not found .*use-context"
    ):
        connect(ReleaseSettings())


def test_kubeconfig_without_the_named_context(kubeconfig: Path) -> None:
    with pytest.raises(ReleaseError, match="no Kubernetes context: context 'prod' not found"):
        connect(ReleaseSettings(kube_context="prod"))


def test_kubeconfig_without_current_context(
    tmp_path: Path, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load(kubeconfig.read_text())
    del config["current-context"]
    path = tmp_path / "no-current"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    with pytest.raises(ReleaseError, match="no Kubernetes context"):
        connect(ReleaseSettings())


def test_connects_to_the_current_context(fake: FakeKube, settings: ReleaseSettings) -> None:
    kube = connect(settings)
    assert kube.where == fake.url
    assert kube.namespace == "tabula"


def test_missing_argo_rollouts_crds_name_the_kinds_and_the_fix(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm
) -> None:
    fake.serve_group("monitoring.coreos.com/v1", MONITORING)
    with pytest.raises(ReleaseError) as caught:
        connect(settings).require_kinds(canary_objects(helm))
    message = str(caught.value)
    assert message.startswith(
        "AnalysisTemplate, Rollout (argoproj.io/v1alpha1) missing: Argo Rollouts is not installed"
    )
    assert "argo-rollouts/releases/latest/download/install.yaml" in message
    assert "--provider native" in message
    # Groups are checked in order and the first missing one stops the check.
    assert [request.path for request in fake.made("GET", "/apis/")] == ["/apis/argoproj.io/v1alpha1"]


def test_missing_prometheus_operator_crds_say_how_to_switch_them_off(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm
) -> None:
    fake.serve_group("argoproj.io/v1alpha1", ARGO)
    with pytest.raises(ReleaseError) as caught:
        connect(settings).require_kinds(canary_objects(helm))
    message = str(caught.value)
    assert message.startswith("PrometheusRule, ServiceMonitor (monitoring.coreos.com/v1) missing")
    assert "kube-prometheus-stack" in message
    assert "monitoring.enabled=false" in message


def test_a_group_that_lacks_one_kind_is_reported(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm
) -> None:
    fake.serve_group("argoproj.io/v1alpha1", {"AnalysisRun": "analysisruns"})
    fake.serve_group("monitoring.coreos.com/v1", MONITORING)
    with pytest.raises(ReleaseError, match=r"^AnalysisTemplate, Rollout \(argoproj.io/v1alpha1\) missing"):
        connect(settings).require_kinds(canary_objects(helm))


def test_every_crd_present_passes(fake: FakeKube, settings: ReleaseSettings, helm: Helm) -> None:
    fake.serve_group("argoproj.io/v1alpha1", ARGO)
    fake.serve_group("monitoring.coreos.com/v1", MONITORING)
    connect(settings).require_kinds(canary_objects(helm))
    assert [request.path for request in fake.made("GET")] == [
        "/apis/argoproj.io/v1alpha1",
        "/apis/monitoring.coreos.com/v1",
    ]


def test_rbac_forbidden_is_reported_with_the_servers_message(
    fake: FakeKube, settings: ReleaseSettings
) -> None:
    fake.fail(
        "GET",
        "/apis/argoproj.io/v1alpha1/namespaces/tabula/rollouts",
        403,
        'rollouts.argoproj.io "tabula" is forbidden: User "dev" cannot get resource "rollouts"',
    )
    with pytest.raises(ReleaseError) as caught:
        Rollouts(connect(settings)).get("tabula")
    assert str(caught.value) == (
        "cannot read Rollout tabula in namespace tabula: forbidden by RBAC: rollouts.argoproj.io "
        '"tabula" is forbidden: User "dev" cannot get resource "rollouts" (ask for a Role that grants it)'
    )


def test_refused_credentials(fake: FakeKube, settings: ReleaseSettings) -> None:
    fake.fail("*", "/", 401, "Unauthorized")
    with pytest.raises(ReleaseError, match="refused the credentials of the current kube-context"):
        Rollouts(connect(settings)).get("tabula")


def test_unreachable_api_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKube()
    fake.start()
    path = fake.write_kubeconfig(tmp_path / "kubeconfig")
    fake.stop()
    config = yaml.safe_load(path.read_text())
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{free_port()}"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("KUBECONFIG", str(path))
    kube = connect(ReleaseSettings())
    kube.api.configuration.retries = 0
    with pytest.raises(
        ReleaseError, match=r"^cannot reach the Kubernetes API at http://127\.0\.0\.1:\d+ to read Rollout"
    ):
        Rollouts(kube).get("tabula")
