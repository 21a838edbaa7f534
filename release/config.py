"""Settings of cluster commands: ``train --k8s``, ``--if-changed``, ``deploy``, ``rollout``, ``release``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, FilePath
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.settings import settings_with_overrides

PROJECT_ROOT = Path(__file__).resolve().parent.parent
Strategy = Literal["rollingUpdate", "canary", "blueGreen"]
Provider = Literal["argo", "native"]


class ReleaseSettings(BaseSettings):
    """Where the release lives, how long to wait, and how to build and ship images (``TABULA_RELEASE_*``)."""

    model_config = SettingsConfigDict(env_prefix="TABULA_RELEASE_", extra="ignore")

    namespace: str = Field(default="tabula", description="Kubernetes namespace of the Helm release.")
    release_name: str = Field(default="tabula", description="Helm release name of the chart.")
    chart: Path = Field(default=PROJECT_ROOT / "charts" / "tabula", description="Chart folder or reference.")
    values_files: list[FilePath] = Field(
        default_factory=list,
        description="Extra Helm values files applied on top of the release's values (each must exist).",
    )
    kube_context: str | None = Field(
        default=None, description="kubeconfig context to use; default: the current context (or in-cluster)."
    )
    helm_binary: str | None = Field(
        default=None, description="Path of helm; default: helm on PATH, then the project's .tools/bin/helm."
    )
    timeout_seconds: float = Field(
        default=1800, gt=0, description="Longest wait for a training Job, a deploy or a rollout."
    )
    poll_seconds: float = Field(default=5.0, gt=0, description="Seconds between two status polls.")
    scrape_wait_seconds: float = Field(
        default=90.0,
        ge=0,
        description="Longest wait for Prometheus to scrape the release's metrics before a release starts "
        "(a few scrape intervals: a new or restarted Prometheus scrapes a target after its first interval).",
    )
    training_image: str | None = Field(
        default=None,
        description="Image (repository:tag) of `train --k8s`; default: the release's training.image.",
    )
    registry: str = Field(
        default="ghcr.io/tabula",
        description="Registry prefix the release pushes the service image to.",
    )
    image_backend: Literal["docker", "podman", "buildah"] = Field(
        default="docker", description="Program that builds and pushes the service image."
    )
    image_network: str | None = Field(default=None, description="Network mode of image builds, e.g. `host`.")
    image_ca_bundle: Path | None = Field(default=None, description="Extra CA bundle trusted by image builds.")
    kind_cluster: str | None = Field(
        default=None, description="Load the image into this kind cluster instead of pushing it."
    )
    prometheus_url: str | None = Field(
        default=None,
        description=(
            "Prometheus base URL: drift checks (`train --if-changed`), and the evidence every release reads "
            "(required by `tabula release`, Argo and native alike)."
        ),
    )
    drift_psi_threshold: float = Field(
        default=0.2,
        gt=0,
        description="`train --if-changed` retrains when any feature's drift PSI exceeds this.",
    )


def load_settings(
    *, base_values_files: Sequence[Path] = (), extra_values_files: Sequence[Path] = (), **overrides: Any
) -> ReleaseSettings:
    """Settings from the environment with command-line values on top; invalid ones fail in one line.

    ``base_values_files`` (the example's chart overlay) come first, then the environment's
    ``values_files``, then ``extra_values_files`` (``-f``): a later file wins, a file given twice
    applies once, at its first place. The combined list is validated like every other given value.
    """
    settings = settings_with_overrides(ReleaseSettings, **overrides)
    if not base_values_files and not extra_values_files:
        return settings
    files: list[Path] = []
    for path in [*base_values_files, *settings.values_files, *extra_values_files]:
        if path.resolve() not in {known.resolve() for known in files}:
            files.append(path)
    return settings_with_overrides(ReleaseSettings, **overrides, values_files=files)
