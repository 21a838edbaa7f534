"""The one place that runs the ``helm`` binary; tests substitute a recording fake of :class:`Helm`.

Values always travel in YAML files (never ``--set``), so tags, JSON lists and commas need no escaping.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from release.config import PROJECT_ROOT, ReleaseSettings
from release.errors import ReleaseError

HELM_TIMEOUT_SECONDS = 900
# `helm upgrade --reset-then-reuse-values` (upgrade_argv) exists from Helm 3.14 on.
MINIMUM_HELM = (3, 14)
MINIMUM_HELM_TEXT = "Helm 3.14+ (for `helm upgrade --reset-then-reuse-values`)"


def find_helm(configured: str | None) -> str:
    """helm from the settings, PATH, or the project's ``.tools/bin`` (``scripts/install-helm.sh``)."""
    candidates = [configured] if configured else [shutil.which("helm"), str(PROJECT_ROOT / ".tools/bin/helm")]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    raise ReleaseError(f"helm is not installed: install {MINIMUM_HELM_TEXT} or run scripts/install-helm.sh")


def explain(stderr: str) -> str:
    """The line of helm's output worth showing, with a hint for the failures users meet most."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error")]
    line = (errors or lines or ["no output"])[-1]
    if "forbidden" in line:
        return f"{line} (RBAC: the current kube user lacks this permission)"
    if "no matches for kind" in line or "ensure CRDs are installed" in line:
        return f"{line} (a CRD is missing: see `tabula deploy --help` for which chart value switches it off)"
    if "Kubernetes cluster unreachable" in line:
        return f"{line} (check the current kube-context: kubectl config current-context)"
    return line


class Helm:
    """``helm template``, ``upgrade --install``, ``get values``, ``status``, ``rollback`` of a release."""

    def __init__(
        self,
        binary: str,
        namespace: str,
        kube_context: str | None = None,
        runner: Callable[[list[str]], subprocess.CompletedProcess[str]] | None = None,
    ) -> None:
        self.binary = binary
        self.namespace = namespace
        self.kube_context = kube_context
        self._runner = runner or _run

    @classmethod
    def from_settings(cls, settings: ReleaseSettings) -> Helm:
        helm = cls(find_helm(settings.helm_binary), settings.namespace, settings.kube_context)
        helm.require_supported_version()
        return helm

    def require_supported_version(self) -> str:
        """The binary's version (``v3.14.0``); refuses one older than :data:`MINIMUM_HELM` in one line."""
        result = self._runner([self.binary, "version", "--template", "{{.Version}}"])
        version = result.stdout.strip()
        found = re.match(r"v?(\d+)\.(\d+)", version)
        if result.returncode != 0 or found is None:
            raise ReleaseError(
                f"cannot tell the version of {self.binary} ({explain(result.stderr or version)}): "
                f"tabula needs {MINIMUM_HELM_TEXT}"
            )
        if (int(found[1]), int(found[2])) < MINIMUM_HELM:
            raise ReleaseError(
                f"{self.binary} is Helm {version}, too old: tabula needs {MINIMUM_HELM_TEXT};"
                " install a newer one or run scripts/install-helm.sh"
            )
        return version

    def _common(self) -> list[str]:
        flags = ["--namespace", self.namespace]
        if self.kube_context:
            flags += ["--kube-context", self.kube_context]
        return flags

    def _call(self, argv: list[str], what: str) -> str:
        result = self._runner(argv)
        if result.returncode != 0:
            raise ReleaseError(f"{what} failed: {explain(result.stderr)}")
        return result.stdout

    def template_argv(self, release: str, chart: Path, values_files: Sequence[Path]) -> list[str]:
        argv = [self.binary, "template", release, str(chart), *self._common()]
        for path in values_files:
            argv += ["--values", str(path)]
        return argv

    def upgrade_argv(self, release: str, chart: Path, values_files: Sequence[Path]) -> list[str]:
        """``upgrade --install`` keeping the release's earlier values below the given files.

        No ``--wait``: Helm cannot judge an Argo Rollout; the caller waits on the workload itself.
        """
        argv = [self.binary, "upgrade", "--install", release, str(chart), *self._common()]
        argv += ["--create-namespace", "--reset-then-reuse-values"]
        for path in values_files:
            argv += ["--values", str(path)]
        return [*argv, "--timeout", f"{HELM_TIMEOUT_SECONDS}s", "--output", "json"]

    def template(
        self,
        release: str,
        chart: Path,
        base: dict[str, Any],
        values_files: Sequence[Path],
        overrides: dict[str, Any],
    ) -> list[dict[str, Any]]:
        """Render the chart with ``base`` (e.g. the installed release's values), files, then overrides."""
        with _values_file(base) as base_file, _values_file(overrides) as override_file:
            out = self._call(
                self.template_argv(release, chart, [base_file, *values_files, override_file]), "helm template"
            )
        return [document for document in yaml.safe_load_all(out) if document]

    def upgrade_install(
        self, release: str, chart: Path, values_files: Sequence[Path], overrides: dict[str, Any]
    ) -> int:
        """Install or upgrade; returns the new Helm revision."""
        with _values_file(overrides) as override_file:
            out = self._call(
                self.upgrade_argv(release, chart, [*values_files, override_file]), "helm upgrade --install"
            )
        return int(json.loads(out)["version"])

    def get_values(self, release: str, *, computed: bool) -> dict[str, Any] | None:
        """The release's user-supplied values (``computed``: with the chart's defaults); None if absent."""
        argv = [self.binary, "get", "values", release, *self._common(), "--output", "json"]
        if computed:
            argv.append("--all")
        result = self._runner(argv)
        if result.returncode != 0:
            if "not found" in result.stderr:
                return None
            raise ReleaseError(f"helm get values failed: {explain(result.stderr)}")
        values: dict[str, Any] = json.loads(result.stdout or "null") or {}
        return values

    def revision(self, release: str) -> int | None:
        """The deployed revision of the release, or None when it is not installed."""
        result = self._runner([self.binary, "status", release, *self._common(), "--output", "json"])
        if result.returncode != 0:
            if "not found" in result.stderr:
                return None
            raise ReleaseError(f"helm status failed: {explain(result.stderr)}")
        return int(json.loads(result.stdout)["version"])

    def test_argv(self, release: str) -> list[str]:
        """``helm test``: the chart's prediction check and, with ``loadTest.enabled``, its Locust SLO gate."""
        timeout = f"{HELM_TIMEOUT_SECONDS}s"
        return [self.binary, "test", release, *self._common(), "--logs", "--timeout", timeout]

    def test(self, release: str) -> str:
        """Run the release's test pods; returns their logs, raises when one fails."""
        return self._call(self.test_argv(release), "helm test")

    def rollback(self, release: str, revision: int | None) -> None:
        """Back to ``revision`` (None: the previous one)."""
        argv = [self.binary, "rollback", release]
        if revision is not None:
            argv.append(str(revision))
        self._call([*argv, *self._common(), "--timeout", f"{HELM_TIMEOUT_SECONDS}s"], "helm rollback")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # noqa: S603 - argument list built by this class, no shell
            argv, capture_output=True, text=True, check=False, timeout=HELM_TIMEOUT_SECONDS + 60
        )
    except FileNotFoundError as exc:
        raise ReleaseError(f"cannot run {argv[0]}: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise ReleaseError(f"`{shlex.join(argv[:3])}` did not finish in {exc.timeout:.0f}s") from exc


@contextmanager
def _values_file(values: dict[str, Any]) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tabula-values-") as scratch:
        path = Path(scratch) / "values.yaml"
        path.write_text(yaml.safe_dump(values, sort_keys=True), encoding="utf-8")
        yield path
