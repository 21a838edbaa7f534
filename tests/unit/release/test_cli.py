"""The ``tabula rollout`` commands end to end: real CLI, real helm reading the release record from the
fake API server, real kubernetes client; one-line errors and exit codes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from contracts.errors import ConfigError
from tests.unit.release.fake_helm import CHART_DEFAULTS
from tests.unit.release.fake_kube import FakeKube
from tests.unit.release.test_rollouts import ROLLOUT_PATH, rollout

pytestmark = pytest.mark.unit

CANARY = {
    "image": {"tag": "3-ccc"},
    "rollout": {"strategy": "canary"},
}


@pytest.fixture
def cli_env(kubeconfig: Path, helm_binary: str, tmp_path: Path) -> dict[str, str]:
    return {
        "KUBECONFIG": str(kubeconfig),
        "TABULA_RELEASE_HELM_BINARY": helm_binary,
        "TABULA_RELEASE_NAMESPACE": "tabula",
        # helm keeps its cache and config under HOME.
        "HOME": str(tmp_path),
        "PATH": os.environ["PATH"],
    }


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def test_abort_patches_the_rollout_named_by_the_release(fake: FakeKube, cli_env: dict[str, str]) -> None:
    fake.install_helm_release("tabula", 4, CHART_DEFAULTS, CANARY)
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=1))
    code, out, err = invoke(cli_env, "rollout", "abort")
    assert (code, err) == (0, "")
    assert out == "Rollout tabula aborted: traffic goes back to the stable ReplicaSet\n"
    [patch] = fake.made("PATCH")
    assert (patch.path, patch.body) == (f"{ROLLOUT_PATH}/status", {"status": {"abort": True}})


def test_retry_clears_the_abort_of_the_rollout(fake: FakeKube, cli_env: dict[str, str]) -> None:
    fake.install_helm_release("tabula", 4, CHART_DEFAULTS, CANARY)
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=0, abort=True))
    code, out, err = invoke(cli_env, "rollout", "retry")
    assert (code, err) == (0, "")
    assert out == "Rollout tabula retried: the update to the new version starts again\n"
    [patch] = fake.made("PATCH")
    assert (patch.path, patch.body) == (f"{ROLLOUT_PATH}/status", {"status": {"abort": False}})


def test_a_rolling_update_has_nothing_to_promote(fake: FakeKube, cli_env: dict[str, str]) -> None:
    fake.install_helm_release("tabula", 4, CHART_DEFAULTS, {"image": {"tag": "3-ccc"}})
    code, out, err = invoke(cli_env, "rollout", "promote")
    assert (code, out) == (6, "")
    assert err == "error: a rollingUpdate release has nothing to promote\n"


def test_status_prints_the_rollout(fake: FakeKube, cli_env: dict[str, str]) -> None:
    fake.install_helm_release("tabula", 4, CHART_DEFAULTS, CANARY)
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=2, phase="Progressing"))
    code, out, _ = invoke(cli_env, "rollout", "status")
    assert code == 0
    assert out.splitlines()[:2] == [
        "Rollout tabula: Progressing",
        '  image localhost/tabula-service:3-ccc; step 3/6 {"setWeight":30}, weight 30%',
    ]


def test_a_release_that_is_not_installed(fake: FakeKube, cli_env: dict[str, str]) -> None:
    fake.objects["/version"] = {"major": "1", "minor": "32", "gitVersion": "v1.32.0"}
    code, out, err = invoke(cli_env, "rollout", "promote", "--helm-release", "prod")
    assert (code, out) == (6, "")
    assert err == (
        "error: Helm release 'prod' is not installed in namespace tabula: "
        "install it first with `tabula deploy`\n"
    )


def test_no_kube_context_exits_with_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    code, _, err = invoke(cli_env | {"KUBECONFIG": str(tmp_path / "none")}, "rollout", "status")
    assert code == 6
    assert err.count("\n") == 1
    assert err.startswith("error: no Kubernetes context")


def test_forbidden_exits_with_one_line(fake: FakeKube, cli_env: dict[str, str]) -> None:
    fake.install_helm_release("tabula", 4, CHART_DEFAULTS, CANARY)
    fake.fail("PATCH", ROLLOUT_PATH, 403, 'User "viewer" cannot patch resource "rollouts/status"')
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=1))
    code, _, err = invoke(cli_env, "rollout", "abort")
    assert code == 6
    assert err == (
        'error: cannot patch Rollout tabula status: forbidden by RBAC: User "viewer" cannot patch resource '
        '"rollouts/status" (ask for a Role that grants it)\n'
    )


def test_pipeline_on_a_cluster_needs_a_kube_context(cli_env: dict[str, str], tmp_path: Path) -> None:
    code, _, err = invoke(cli_env | {"KUBECONFIG": str(tmp_path / "none")}, "pipeline", "--k8s")
    assert code == 6
    assert err.count("\n") == 1
    assert err.startswith("error: no Kubernetes context")


def test_pipeline_on_a_cluster_refuses_a_local_data_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    data = tmp_path / "tabula.csv"
    data.write_text("MedInc\n1.0\n")
    code, _, err = invoke(cli_env, "pipeline", "--k8s", "--data", str(data))
    assert code == 2
    assert "is a local file; on the cluster, set the chart value training.env" in err


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["deploy", "--timeout", "-5"],
            "error: invalid setting timeout_seconds (given -5.0): Input should be greater than 0",
        ),
        (
            ["deploy", "-f", "missing.yaml"],
            "error: invalid setting values_files.0 (given missing.yaml): Path does not point to a file",
        ),
        (
            ["release", "-f", "present.yaml", "-f", "."],
            "error: invalid setting values_files.1 (given .): Path does not point to a file",
        ),
        (
            ["rollout", "status", "--namespace", "x", "--helm-release", "h", "--kube-context", "c"],
            None,
        ),
    ],
    ids=["negative-timeout", "missing-values-file", "values-file-is-a-directory", "valid"],
)
def test_every_command_line_override_is_validated_in_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], line: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "present.yaml").write_text("{}\n")
    result = CliRunner().invoke(app, args, env={"KUBECONFIG": str(tmp_path / "none")})
    if line is None:  # valid settings: the command gets as far as the (missing) cluster, exit 6
        assert result.exit_code == 6, result.output
        assert result.output.startswith("error: no Kubernetes context"), result.output
        return
    assert (result.exit_code, result.output) == (2, line + "\n")


def test_values_files_from_the_command_line_come_after_the_environments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from release.config import load_settings

    for name in ("env.yaml", "cli.yaml"):
        (tmp_path / name).write_text("{}\n")
    monkeypatch.setenv("TABULA_RELEASE_VALUES_FILES", json.dumps([str(tmp_path / "env.yaml")]))
    settings = load_settings(extra_values_files=[tmp_path / "cli.yaml"], timeout_seconds=3)
    assert settings.values_files == [tmp_path / "env.yaml", tmp_path / "cli.yaml"]
    assert settings.timeout_seconds == 3
    monkeypatch.setenv("TABULA_RELEASE_VALUES_FILES", json.dumps([str(tmp_path / "gone.yaml")]))
    with pytest.raises(ConfigError, match=r"^invalid setting TABULA_RELEASE_VALUES_FILES\.0: Path does not"):
        load_settings(extra_values_files=[tmp_path / "cli.yaml"])


def test_the_examples_chart_overlay_comes_first_and_a_file_given_twice_applies_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helm_binary: str
) -> None:
    from cli.release import cluster_for
    from contracts.examples import load_example

    iris = load_example("iris")
    assert iris.chart_values_files == (iris.folder / "values.yaml",)
    assert load_example("housing").chart_values_files == ()  # the chart's defaults are housing's
    (tmp_path / "env.yaml").write_text("{}\n")
    monkeypatch.setenv("TABULA_RELEASE_VALUES_FILES", json.dumps([str(tmp_path / "env.yaml")]))
    monkeypatch.setenv("TABULA_RELEASE_HELM_BINARY", helm_binary)
    monkeypatch.setenv("TABULA_EXAMPLE", "iris")
    monkeypatch.setattr("release.kube.connect", lambda settings: None)
    cluster = cluster_for(None, None, None, [iris.folder / "values.yaml", tmp_path / "env.yaml"], None)
    assert cluster.settings.values_files == [iris.folder / "values.yaml", tmp_path / "env.yaml"]
    monkeypatch.setenv("TABULA_EXAMPLE", "housing")
    assert cluster_for(None, None, None, None, None).settings.values_files == [tmp_path / "env.yaml"]


def test_deploy_refuses_a_strategy_switch_that_would_replace_the_serving_deployment(
    fake: FakeKube, cli_env: dict[str, str]
) -> None:
    """A rollingUpdate release (Deployment ``tabula``) asked to become an Argo canary (Rollout
    ``tabula``): Helm would delete the Deployment while the Rollout's pods still load."""
    fake.serve_group("argoproj.io/v1alpha1", {"Rollout": "rollouts", "AnalysisTemplate": "analysistemplates"})
    fake.serve_group(
        "monitoring.coreos.com/v1", {"ServiceMonitor": "servicemonitors", "PrometheusRule": "prometheusrules"}
    )
    fake.install_helm_release(
        "tabula", 4, CHART_DEFAULTS, {"image": {"repository": "localhost/tabula-service", "tag": "3-ccc"}}
    )
    labels = {
        "app.kubernetes.io/name": "tabula",
        "app.kubernetes.io/instance": "tabula",
        "app.kubernetes.io/component": "server",
    }
    fake.put(
        "/apis/apps/v1/namespaces/tabula/deployments/tabula",
        {"metadata": {"name": "tabula", "labels": labels}, "spec": {"replicas": 2}},
    )
    secrets_before = [path for path in fake.objects if "/secrets/" in path]

    code, out, err = invoke(
        cli_env,
        "deploy",
        "--strategy",
        "canary",
        "--provider",
        "argo",
        "--image",
        "localhost/tabula-service:4-ddd",
    )

    assert code == 6, err
    assert out == "deploying localhost/tabula-service:4-ddd (model v4) as canary/argo\n"
    assert err == (
        "error: refusing to replace the serving workload(s) Deployment/tabula with Rollout/tabula: Helm "
        "would delete the running pods before the new ones are ready (an outage). Switch safely: 1) kubectl "
        "-n tabula annotate deployment/tabula helm.sh/resource-policy=keep (Helm then leaves it running "
        "and this check lets the upgrade through); 2) run the upgrade again; 3) wait until the new workload "
        "is ready and serving; 4) kubectl -n tabula delete deployment/tabula\n"
    )
    # Refused before `helm upgrade`: no new release record, nothing written to the cluster.
    assert [path for path in fake.objects if "/secrets/" in path] == secrets_before
    assert fake.made("POST") == fake.made("PUT") == fake.made("PATCH") == []
