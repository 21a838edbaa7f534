"""The GitHub workflows cannot run here, so they are checked offline: against GitHub's workflow
schema (check-jsonschema), by zizmor's security audits, and for the project's own rules (every
action pinned by commit, least-privilege permissions, no expressions in shell code) and the steps
each workflow promises."""

import gzip
import hashlib
import importlib.util
import json
import re
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.support import REPO_ROOT, VENV_BIN, require_tool, shared_data_path

pytestmark = pytest.mark.unit

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
E2E_ENV = REPO_ROOT / ".github" / "e2e-env.sh"
FETCH_TEST_DATA = REPO_ROOT / "scripts" / "fetch_test_data.py"
WORKFLOW_NAMES = ["ci.yml", "e2e.yml", "release.yml"]
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
VERSION_COMMENT = re.compile(r"uses: (\S+) # v\d+(\.\d+)*\s*$")
# A workflow with one instance of each high-severity problem the audit must catch.
INSECURE_WORKFLOW = """\
name: insecure
on: pull_request_target
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          ref: ${{ github.event.pull_request.head.sha }}
      - run: echo "${{ github.event.pull_request.title }}"
"""


def _tool(name: str) -> str:
    """A tool from this virtual environment (or PATH); missing fails under CI, else skips."""
    beside_python = VENV_BIN / name
    if beside_python.exists():
        return str(beside_python)
    return require_tool(name)


def _load(name: str) -> dict[str, Any]:
    workflow: dict[str, Any] = yaml.safe_load((WORKFLOWS / name).read_text())
    # YAML 1.1 reads the bare key `on` as the boolean True.
    workflow["on"] = workflow.pop(True)
    return workflow


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _shell(workflow: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in _steps(workflow))


def _audit(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [_tool("zizmor"), "--offline", "--persona", "auditor", "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    findings: list[dict[str, Any]] = json.loads(result.stdout)
    return findings


def test_the_three_workflows_exist() -> None:
    assert sorted(path.name for path in WORKFLOWS.glob("*.yml")) == sorted(WORKFLOW_NAMES)


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_workflow_matches_githubs_schema(name: str) -> None:
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOWS / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_rejects_a_broken_workflow(tmp_path: Path) -> None:
    broken = _load("ci.yml")
    del broken["jobs"]["test"]["runs-on"]
    path = tmp_path / "broken.yml"
    path.write_text(yaml.safe_dump(broken))
    result = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_zizmor_finds_nothing_of_high_severity(name: str) -> None:
    findings = _audit(WORKFLOWS / name)
    high = [(f["ident"], f["desc"]) for f in findings if f["determinations"]["severity"] == "High"]
    assert high == []


def test_zizmor_audit_catches_an_insecure_workflow(tmp_path: Path) -> None:
    path = tmp_path / ".github" / "workflows" / "insecure.yml"
    path.parent.mkdir(parents=True)
    path.write_text(INSECURE_WORKFLOW)
    high = {f["ident"] for f in _audit(path) if f["determinations"]["severity"] == "High"}
    assert {"template-injection", "unpinned-uses", "dangerous-triggers"} <= high


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_actions_are_pinned_by_commit_with_a_version_comment(name: str) -> None:
    text = (WORKFLOWS / name).read_text()
    uses_lines = [line.strip().removeprefix("- ") for line in text.splitlines() if "uses:" in line]
    assert uses_lines
    for line in uses_lines:
        match = VERSION_COMMENT.search(line)
        assert match, f"no version comment: {line}"
        assert PINNED.match(match.group(1)), f"not pinned by commit: {line}"


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_permissions_are_least_privilege(name: str) -> None:
    workflow = _load(name)
    assert workflow["permissions"] == {}
    for job_name, job in workflow["jobs"].items():
        granted = job["permissions"]
        assert granted.get("contents") == "read", job_name
        writes = {scope for scope, level in granted.items() if level == "write"}
        # Only publishing may write, and only packages.
        assert writes <= ({"packages"} if name == "release.yml" else set()), job_name


@pytest.mark.parametrize("name", WORKFLOW_NAMES)
def test_no_expressions_in_shell_code_and_no_persisted_credentials(name: str) -> None:
    workflow = _load(name)
    assert "${{" not in _shell(workflow)
    checkouts = [step for step in _steps(workflow) if step.get("uses", "").startswith("actions/checkout@")]
    assert checkouts
    for step in checkouts:
        assert step["with"]["persist-credentials"] is False


def test_ci_runs_the_project_checks_security_and_image_scans() -> None:
    workflow = _load("ci.yml")
    assert {"push", "pull_request"} <= workflow["on"].keys()
    jobs = workflow["jobs"]
    assert "bash .ci/run" in _shell({"jobs": {"test": jobs["test"]}})
    setup_uv = [step for step in _steps(workflow) if step.get("uses", "").startswith("astral-sh/setup-uv@")]
    assert setup_uv
    assert all(step["with"]["enable-cache"] is True for step in setup_uv)
    shell = _shell(workflow)
    assert "pip-audit" in shell
    assert "uv export --frozen --no-dev" in shell
    assert "ruff check --select S " in shell
    scanned = {
        step["with"]["image-ref"]
        for step in _steps(workflow)
        if step.get("uses", "").startswith("aquasecurity/trivy-action@")
    }
    assert scanned == {"localhost/tabula-service:ci", "localhost/tabula-training:ci"}
    assert "tabula images" in shell


def test_e2e_runs_the_release_loop_on_kind_and_keeps_logs_on_failure() -> None:
    workflow = _load("e2e.yml")
    shell = _shell(workflow)
    uses = [step.get("uses", "") for step in _steps(workflow)]
    kind = next(step for step in _steps(workflow) if step.get("uses", "").startswith("helm/kind-action@"))
    assert kind["with"]["config"] == "k8s/kind/cluster.yaml"
    assert (REPO_ROOT / kind["with"]["config"]).exists()
    ordered = [
        "kube-prometheus-stack",
        "argo-rollouts",
        "kind load docker-image",
        "kubectl apply -k k8s/overlays/kind",
        "tabula pipeline --k8s --strategy canary --provider argo --kind-cluster",
        "start_cluster_load load-baseline",
        "wait_cluster_load load-baseline",
        "tabula train --k8s",
        "start_cluster_load load-good",
        "tabula release --strategy canary",
        "stop_cluster_load load-good",
        "TABULA_SABOTAGE_TARGET",
        "start_cluster_load load-bad",
        "stop_cluster_load load-bad",
    ]
    positions = [shell.index(fragment) for fragment in ordered]
    assert positions == sorted(positions)
    collect = [step for step in _steps(workflow) if step.get("if") == "failure()"]
    assert any("kubectl logs" in step.get("run", "") for step in collect)
    assert any(use.startswith("actions/upload-artifact@") for use in uses)


def test_e2e_sends_its_load_from_inside_the_cluster_not_through_a_port_forward() -> None:
    # kind publishes 127.0.0.1:3000 (k8s/kind/cluster.yaml), so a port-forward to 3000 binds only [::1]
    # and the runner's 127.0.0.1:3000 is Docker's proxy with nothing behind it; a port-forward to a
    # Service also pins one pod and dies with it. The load runs in a pod against the Service's DNS name.
    workflow = _load("e2e.yml")
    shell = _shell(workflow)
    # Only Prometheus (one pod) is port-forwarded: the release loop reads its evidence there.
    forwards = [line for line in shell.splitlines() if "port-forward" in line]
    assert forwards, "the release loop needs Prometheus"
    assert all("svc/prometheus-operated 9090:9090" in line for line in forwards), forwards
    assert "tabula loadtest" not in shell  # never from the runner
    assert "localhost:3000" not in shell
    assert "127.0.0.1:3000" not in shell
    service_url = workflow["env"]["SERVICE_URL"]
    namespace, release = workflow["env"]["NAMESPACE"], workflow["env"]["TABULA_RELEASE_RELEASE_NAME"]
    assert service_url == f"http://{release}.{namespace}.svc:3000"
    published = yaml.safe_load((REPO_ROOT / "k8s" / "kind" / "cluster.yaml").read_text())
    host_ports = {m["hostPort"] for node in published["nodes"] for m in node.get("extraPortMappings", [])}
    assert 3000 in host_ports  # why a port-forward to 3000 cannot work on the runner


def _load_pod(tmp_path: Path, *extra: str, example: str | None = None) -> dict[str, Any]:
    """The Pod start_cluster_load applies, captured by a kubectl stand-in that records `apply -f -`."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    captured = tmp_path / "pod.json"
    (fake_bin / "kubectl").write_text(
        f'#!/bin/sh\ncase " $* " in *" apply -f - "*) cat > {captured} ;; esac\n'
    )
    (fake_bin / "kubectl").chmod(0o755)
    workflow_env = _load("e2e.yml")["env"]
    env = {
        "PATH": f"{fake_bin}:/usr/bin:/bin",
        "NAMESPACE": workflow_env["NAMESPACE"],
        "SERVICE_URL": workflow_env["SERVICE_URL"],
        "TABULA_RELEASE_TRAINING_IMAGE": workflow_env["TABULA_RELEASE_TRAINING_IMAGE"],
    } | ({"TABULA_EXAMPLE": example} if example else {})
    require_tool("jq")
    result = subprocess.run(
        ["bash", "-c", f'source {E2E_ENV} && start_cluster_load "$@"', "bash", "load-x", "5", "20m", *extra],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    pod: dict[str, Any] = json.loads(captured.read_text())
    return pod


def test_the_in_cluster_load_pod_is_restricted_and_targets_the_service(tmp_path: Path) -> None:
    import kubernetes_validate

    pod = _load_pod(tmp_path, "--tags=single")
    kubernetes_validate.validate(pod, "1.32.0", strict=True)
    [container] = pod["spec"]["containers"]
    workflow_env = _load("e2e.yml")["env"]
    assert container["image"] == workflow_env["TABULA_RELEASE_TRAINING_IMAGE"]
    assert container["command"] == ["tabula"]
    assert container["args"] == [
        "loadtest", f"--url={workflow_env['SERVICE_URL']}", "--users=5", "--run-time=20m",
        "--out=/tmp/loadtest", "--tags=single",
    ]  # fmt: skip
    # k8s/base/namespace.yaml enforces the restricted Pod Security Standard.
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["spec"]["restartPolicy"] == "Never"
    # The rows and answers of the job's example; housing when none is named.
    assert container["env"] == [{"name": "TABULA_LOAD_EXAMPLE", "value": "housing"}]
    (tmp_path / "iris").mkdir()
    iris = _load_pod(tmp_path / "iris", example="iris")["spec"]["containers"][0]
    assert iris["env"] == [{"name": "TABULA_LOAD_EXAMPLE", "value": "iris"}]
    namespace = yaml.safe_load((REPO_ROOT / "k8s" / "base" / "namespace.yaml").read_text())
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def _fetcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_test_data", FETCH_TEST_DATA)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ci_provides_the_shared_data_before_the_checks() -> None:
    steps = _steps({"jobs": {"test": _load("ci.yml")["jobs"]["test"]}})
    runs = [step.get("run", "") for step in steps]
    dataset = next(i for i, run in enumerate(runs) if "fetch_test_data.py dataset ../shared/data" in run)
    crds = next(i for i, run in enumerate(runs) if "fetch_test_data.py crds ../shared/crds" in run)
    checks = next(i for i, run in enumerate(runs) if "bash .ci/run" in run)
    assert max(dataset, crds) < checks
    # The folders the tests read: tests/support.py (data) and tests/chart/helm.py (CRDs).
    from tests.chart.helm import CRD_DIR
    from tests.support import SHARED

    assert REPO_ROOT.parent / "shared" == SHARED
    assert SHARED / "crds" == CRD_DIR


def test_pinned_test_data_matches_the_versions_the_project_targets() -> None:
    fetcher = _fetcher()
    pinned = fetcher.pinned()
    assert set(pinned) == {fetcher.DATASET_CHECKSUM_NAME, *fetcher.CRDS}
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in pinned.values())
    e2e = _load("e2e.yml")["env"]
    argo = [url for name, url in fetcher.CRDS.items() if name.startswith("argo-rollouts.")]
    assert argo
    assert all(f"/argo-rollouts/{e2e['ARGO_ROLLOUTS_VERSION']}/" in url for url in argo)
    operator = [url for name, url in fetcher.CRDS.items() if name.startswith("prometheus-operator.")]
    # kube-prometheus-stack 77.10.0's Chart.yaml: appVersion v0.85.0.
    assert e2e["KUBE_PROMETHEUS_STACK_VERSION"] == "77.10.0"
    assert operator
    assert all("/prometheus-operator/v0.85.0/" in url for url in operator)
    assert all(url.startswith("https://raw.githubusercontent.com/") for url in fetcher.CRDS.values())


def test_the_dataset_written_from_sklearns_cache_is_the_shared_file(tmp_path: Path) -> None:
    import numpy as np

    fetcher = _fetcher()
    shared = shared_data_path()
    with gzip.open(shared) as csv:
        raw = np.loadtxt(csv, delimiter=",", skiprows=1)
    # fetch_california_housing caches the StatLib columns reordered (sklearn/datasets/_california_housing.py).
    sklearn_cache = raw[:, [8, 7, 2, 3, 4, 5, 6, 1, 0]]
    content = fetcher.statlib_csv(sklearn_cache)
    assert content == gzip.decompress(shared.read_bytes())
    fetcher.check(fetcher.DATASET_CHECKSUM_NAME, content)
    with pytest.raises(SystemExit, match="sha256"):
        fetcher.check(fetcher.DATASET_CHECKSUM_NAME, content.replace(b"452600.000000", b"452601.000000"))


def test_crd_fetch_writes_only_files_with_the_pinned_checksum(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    fetcher = _fetcher()
    pinned = fetcher.pinned()
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    # A stand-in upstream on loopback whose files have the pinned checksums only when named "good".
    good_name = next(iter(fetcher.CRDS))
    good = b"pinned content"
    (upstream / "good").write_bytes(good)
    (upstream / "changed").write_bytes(b"an upstream that moved")
    pinned_good = hashlib.sha256(good).hexdigest()
    checksums = tmp_path / "test-data.sha256"
    checksums.write_text(f"{pinned_good}  {good_name}\n{pinned[good_name]}  other.yaml\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(upstream))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        fetcher.CHECKSUMS = checksums
        fetcher.CRDS = {good_name: f"{base}/good"}
        [written] = fetcher.fetch_crds(tmp_path / "crds")
        assert written.read_bytes() == good
        fetcher.CRDS = {good_name: f"{base}/good", "other.yaml": f"{base}/changed"}
        with pytest.raises(SystemExit, match=r"other\.yaml: sha256"):
            fetcher.fetch_crds(tmp_path / "crds-2")
        assert not (tmp_path / "crds-2" / "other.yaml").exists()
    finally:
        httpd.shutdown()


def test_release_publishes_images_and_the_chart_from_the_tag() -> None:
    workflow = _load("release.yml")
    assert workflow["on"] == {"push": {"tags": ["v*.*.*"]}}
    shell = _shell(workflow)
    assert 'version="${GITHUB_REF_NAME#v}"' in shell
    assert "tabula images" in shell
    assert "--push" in shell
    assert "ghcr.io/${OWNER,,}" in shell
    assert 'helm package charts/tabula --version "$version" --app-version "$version"' in shell
    assert "oci://ghcr.io/${OWNER,,}/charts" in shell
    # A cache restored into a publishing job could smuggle code into released artifacts.
    setup_uv = [step for step in _steps(workflow) if step.get("uses", "").startswith("astral-sh/setup-uv@")]
    assert all(step["with"]["enable-cache"] is False for step in setup_uv)


def test_e2e_runs_every_worked_example_on_the_same_steps() -> None:
    from contracts.examples import load_example

    workflow = _load("e2e.yml")
    job = workflow["jobs"]["kind"]
    matrix = job["strategy"]["matrix"]["include"]
    assert job["strategy"]["fail-fast"] is False
    assert [entry["example"] for entry in matrix] == ["housing", "iris"]
    for entry in matrix:
        spec = load_example(entry["example"]).spec
        assert entry["model-name"] == spec.model_name
        if entry["values"]:
            overlay = yaml.safe_load((REPO_ROOT / entry["values"]).read_text())
            assert (overlay["model"]["name"], overlay["model"]["task"]) == (spec.model_name, spec.task)
        else:
            assert spec.task == "regression"  # the chart's defaults are the housing example's
    assert job["env"]["TABULA_EXAMPLE"] == "${{ matrix.example }}"
    assert job["env"]["TABULA_MODEL_NAME"] == "${{ matrix.model-name }}"
    assert job["env"]["EXAMPLE_VALUES"] == "${{ matrix.values }}"
    shell = _shell(workflow)
    assert 'values_files "$RUNNER_TEMP/kind-values.yaml" "$EXAMPLE_VALUES"' in shell
    sabotage = next(s for s in _steps(workflow) if "TABULA_SABOTAGE_TARGET" in s.get("env", {}))
    assert sabotage["env"]["TABULA_SABOTAGE_TARGET"] == "${{ matrix.sabotage }}"


def _e2e_function(tmp_path: Path, call: str, **env: str) -> subprocess.CompletedProcess[str]:
    require_tool("jq")
    return subprocess.run(
        ["bash", "-c", f"source {E2E_ENV} && {call}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin", **env},
    )  # fmt: skip


def test_values_files_lists_the_kind_values_and_the_examples_overlay(tmp_path: Path) -> None:
    (tmp_path / "kind.yaml").write_text("{}")
    (tmp_path / "overlay.yaml").write_text("{}")
    both = _e2e_function(tmp_path, "values_files kind.yaml overlay.yaml")
    only_kind = _e2e_function(tmp_path, 'values_files kind.yaml ""')
    assert json.loads(both.stdout) == [str(tmp_path / "kind.yaml"), str(tmp_path / "overlay.yaml")]
    assert json.loads(only_kind.stdout) == [str(tmp_path / "kind.yaml")]


@pytest.mark.parametrize(("example", "target"), [("housing", "5.0"), ("iris", "setosa")])
def test_sabotaged_params_are_valid_params_of_one_constant_model(
    tmp_path: Path, example: str, target: str
) -> None:
    from sklearn.datasets import load_iris

    from contracts.examples import load_example
    from contracts.params import load_params

    result = _e2e_function(
        tmp_path, "sabotaged_params params.yaml", TABULA_EXAMPLE=example, TABULA_SABOTAGE_TARGET=target
    )
    assert result.returncode == 0, result.stderr
    params = load_params(tmp_path / "params.yaml")
    shipped = load_params(load_example(example).params_file)
    assert params.split == shipped.split  # the same test rows as the models it is compared with
    assert params.promotion.metric == shipped.promotion.metric
    (candidate,) = params.candidates.values()
    assert candidate.estimator.startswith("sklearn.dummy.Dummy")
    assert candidate.params["strategy"] == "constant"
    if example == "iris":
        assert candidate.params["constant"] in load_iris().target_names
    else:
        assert candidate.params["constant"] == float(target)


def test_sabotaged_params_refuse_an_example_without_a_sabotaged_model(tmp_path: Path) -> None:
    result = _e2e_function(
        tmp_path, "sabotaged_params params.yaml", TABULA_EXAMPLE="orchids", TABULA_SABOTAGE_TARGET="x"
    )
    assert result.returncode != 0
    assert "no sabotaged model for example orchids" in result.stderr
