"""The GitHub workflows cannot run here, so they are checked offline: against GitHub's workflow
schema (check-jsonschema), by zizmor's security audits, and for the project's own rules (every
action pinned by commit, least-privilege permissions, no expressions in shell code) and the steps
each workflow promises."""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO_ROOT, VENV_BIN, require_tool

pytestmark = pytest.mark.unit

WORKFLOWS = REPO_ROOT / ".github" / "workflows"
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
    assert scanned == {"localhost/housing-service:ci", "localhost/housing-training:ci"}
    assert "housing images" in shell


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
        "housing pipeline --k8s --strategy canary --provider argo --kind-cluster",
        "housing loadtest",
        "housing train --k8s",
        "housing release --strategy canary",
        "HOUSING_SABOTAGE_TARGET",
    ]
    positions = [shell.index(fragment) for fragment in ordered]
    assert positions == sorted(positions)
    collect = [step for step in _steps(workflow) if step.get("if") == "failure()"]
    assert any("kubectl logs" in step.get("run", "") for step in collect)
    assert any(use.startswith("actions/upload-artifact@") for use in uses)


def test_release_publishes_images_and_the_chart_from_the_tag() -> None:
    workflow = _load("release.yml")
    assert workflow["on"] == {"push": {"tags": ["v*.*.*"]}}
    shell = _shell(workflow)
    assert 'version="${GITHUB_REF_NAME#v}"' in shell
    assert "housing images" in shell
    assert "--push" in shell
    assert "ghcr.io/${OWNER,,}" in shell
    assert 'helm package charts/housing --version "$version" --app-version "$version"' in shell
    assert "oci://ghcr.io/${OWNER,,}/charts" in shell
    # A cache restored into a publishing job could smuggle code into released artifacts.
    setup_uv = [step for step in _steps(workflow) if step.get("uses", "").startswith("astral-sh/setup-uv@")]
    assert all(step["with"]["enable-cache"] is False for step in setup_uv)
