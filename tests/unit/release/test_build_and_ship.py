"""The release loop builds its service image through the one builder, ``release.images.build_images``:
``bentoml containerize`` runs from ``CONTAINERIZE_CWD`` (bentoml/BentoML#5566), then the image is pushed
or loaded into kind. The processes are recorded, not run: building needs a Bento, a daemon and a registry,
which tests/e2e has."""

from __future__ import annotations

from pathlib import Path

import pytest

from release import images
from release.cluster import Cluster
from release.config import ReleaseSettings
from release.helm import Helm
from release.kube import Kube
from release.loop import build_and_ship
from service import packaging
from training.config import TrainingSettings

pytestmark = pytest.mark.unit


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], Path | None]]:
    recorded: list[tuple[list[str], Path | None]] = []
    monkeypatch.setattr(images, "run", lambda command, cwd=None: recorded.append((command, cwd)))
    monkeypatch.setattr(packaging, "build_bento", lambda name, version, uri: f"tabula:{name}-{version}")
    monkeypatch.setattr(images, "resolve_bento", lambda bento: (str(bento), "2"))
    return recorded


@pytest.mark.parametrize("kind_cluster", [None, "dev"])
def test_the_release_builds_with_the_images_builder(
    commands: list[tuple[list[str], Path | None]],
    settings: ReleaseSettings,
    helm: Helm,
    kube: Kube,
    kind_cluster: str | None,
) -> None:
    settings = settings.model_copy(
        update={"registry": "localhost", "image_backend": "podman", "kind_cluster": kind_cluster}
    )
    lines: list[str] = []
    training = TrainingSettings(model_name="tabula")

    ref = build_and_ship(Cluster(settings, helm, kube, lines.append), training, "2", "abc123")

    assert ref == "localhost/tabula-service:2-abc123"
    (containerize, cwd), *rest = commands
    assert containerize[1:5] == ["-m", "bentoml", "containerize", "tabula:tabula-2"]
    assert cwd == images.CONTAINERIZE_CWD
    if kind_cluster is None:
        assert rest == [(["podman", "push", ref], None)]
    else:
        assert rest[-1][0][:3] == ["kind", "load", "image-archive"]
        assert rest[-1][0][-2:] == ["--name", "dev"]
