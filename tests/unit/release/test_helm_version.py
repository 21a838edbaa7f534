"""``Helm.from_settings`` refuses a helm older than the flags :class:`release.helm.Helm` passes."""

from __future__ import annotations

import subprocess

import pytest

from release.config import ReleaseSettings
from release.errors import ReleaseError
from release.helm import Helm

pytestmark = pytest.mark.unit


def helm_printing(stdout: str, returncode: int = 0, stderr: str = "") -> Helm:
    def runner(argv: list[str]) -> subprocess.CompletedProcess[str]:
        assert argv == ["/opt/helm", "version", "--template", "{{.Version}}"]
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)

    return Helm("/opt/helm", "tabula", runner=runner)


def test_the_real_helm_is_recent_enough(settings: ReleaseSettings) -> None:
    helm = Helm.from_settings(settings)
    assert helm.require_supported_version().startswith("v")


@pytest.mark.parametrize("version", ["v3.14.0", "v3.19.2", "v4.1.4"])
def test_helm_3_14_and_later_pass(version: str) -> None:
    assert helm_printing(version).require_supported_version() == version


@pytest.mark.parametrize("version", ["v3.8.2", "v3.13.3", "v2.17.0"])
def test_older_helm_is_refused_in_one_line(version: str) -> None:
    """Helm's changelog: `--reset-then-reuse-values` came with v3.14.0."""
    with pytest.raises(ReleaseError) as caught:
        helm_printing(version).require_supported_version()
    message = str(caught.value)
    assert message == (
        f"/opt/helm is Helm {version}, too old: tabula needs Helm 3.14+ (for `helm upgrade "
        "--reset-then-reuse-values`); install a newer one or run scripts/install-helm.sh"
    )
    assert "\n" not in message


def test_an_unreadable_version_is_an_error() -> None:
    with pytest.raises(ReleaseError, match=r"cannot tell the version of /opt/helm .*needs Helm 3.14\+"):
        helm_printing(
            "", returncode=1, stderr="Error: unknown flag: --template\n"
        ).require_supported_version()
