"""Fixtures of the cluster tests: the fake API server, a kubeconfig pointing at it, real helm."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from release.config import ReleaseSettings
from release.helm import Helm
from release.kube import Kube, connect
from tests.support import REPO_ROOT, require_tool
from tests.unit.release.fake_kube import FakeKube

NAMESPACE = "tabula"


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    server = FakeKube()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kubeconfig(fake: FakeKube, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = fake.write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return path


@pytest.fixture
def helm_binary() -> str:
    found = Path(REPO_ROOT / ".tools" / "bin" / "helm")
    return str(found) if found.is_file() else require_tool("helm")


@pytest.fixture
def settings(kubeconfig: Path, helm_binary: str) -> ReleaseSettings:
    del kubeconfig
    return ReleaseSettings(
        namespace=NAMESPACE,
        release_name="tabula",
        helm_binary=helm_binary,
        timeout_seconds=20,
        poll_seconds=0.05,
    )


@pytest.fixture
def kube(settings: ReleaseSettings) -> Kube:
    return connect(settings)


@pytest.fixture
def helm(settings: ReleaseSettings) -> Helm:
    return Helm.from_settings(settings)
