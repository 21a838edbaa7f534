"""Cluster commands of ``tabula``: ``deploy``, ``rollout status|promote|abort|undo``, ``release``.

kubernetes, mlflow and bentoml are imported inside the commands: ``tabula --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from cli.exits import handle_errors

if TYPE_CHECKING:
    from contracts.examples import Example
    from release.cluster import Cluster
    from release.drivers import Driver
    from training.config import TrainingSettings


rollout_app = typer.Typer(
    help="Watch, promote, abort, retry or undo the release's rollout (Argo or native).", no_args_is_help=True
)

NamespaceOption = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Namespace [env: TABULA_RELEASE_NAMESPACE].")
]
HelmReleaseOption = Annotated[
    str | None, typer.Option("--helm-release", help="Helm release name [env: TABULA_RELEASE_RELEASE_NAME].")
]
ContextOption = Annotated[
    str | None, typer.Option("--kube-context", help="kubeconfig context [env: TABULA_RELEASE_KUBE_CONTEXT].")
]
ValuesOption = Annotated[
    list[Path] | None,
    # Existence is checked by ReleaseSettings (one `error:` line, exit 2), not by click's usage error.
    typer.Option("--values", "-f", help="Extra Helm values file (repeatable)."),
]
TimeoutOption = Annotated[
    float | None, typer.Option("--timeout", help="Seconds to wait [env: TABULA_RELEASE_TIMEOUT_SECONDS].")
]
StrategyName = Literal["rollingUpdate", "canary", "blueGreen"]
ProviderName = Literal["argo", "native"]


def say(message: str) -> None:
    typer.echo(message)
    sys.stdout.flush()


def cluster_for(
    namespace: str | None,
    helm_release: str | None,
    kube_context: str | None,
    values: list[Path] | None,
    timeout: float | None,
    example: Example | None = None,
    **more: Any,
) -> Cluster:
    """The cluster the command acts on; the example's chart overlay (``values.yaml`` in its folder)
    applies under every other values file, so ``--example iris`` needs no ``-f``."""
    from release.cluster import Cluster
    from release.config import load_settings
    from release.helm import Helm
    from release.kube import connect
    from training.config import TrainingSettings

    overlay = (example or TrainingSettings().resolved_example).chart_values_files
    settings = load_settings(
        namespace=namespace,
        release_name=helm_release,
        kube_context=kube_context,
        timeout_seconds=timeout,
        base_values_files=overlay,
        extra_values_files=values or (),
        **more,
    )
    return Cluster(settings, Helm.from_settings(settings), connect(settings), say)


@handle_errors
def deploy(
    version: Annotated[
        str | None, typer.Option("--version", help="Model version to serve; default: production.")
    ] = None,
    image: Annotated[
        str | None, typer.Option("--image", help="Service image reference; default: from --version.")
    ] = None,
    strategy: Annotated[
        StrategyName | None, typer.Option(help="Release strategy; default: the release's.")
    ] = None,
    provider: Annotated[
        ProviderName | None, typer.Option(help="argo or native; default: the release's.")
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="Image registry prefix [env: TABULA_RELEASE_REGISTRY].")
    ] = None,
    git_sha: Annotated[str | None, typer.Option(help="Commit in the image tag; default: git HEAD.")] = None,
    namespace: NamespaceOption = None,
    helm_release: HelmReleaseOption = None,
    kube_context: ContextOption = None,
    values: ValuesOption = None,
    timeout: TimeoutOption = None,
) -> None:
    """helm upgrade --install the service image of a model version, then wait until it serves.

    Missing CRDs are reported before anything changes: Argo Rollouts (or use --provider native /
    --strategy rollingUpdate) and the prometheus-operator's ServiceMonitor/PrometheusRule
    (or -f a file with monitoring.enabled: false).
    """
    from release import chart
    from release.loop import deploy as run_deploy

    cluster = cluster_for(namespace, helm_release, kube_context, values, timeout, registry=registry)
    image, version = resolve_image(cluster, image, version, git_sha)
    current = cluster.values() or {}
    chosen_strategy = strategy or str(chart.dig(current, "rollout.strategy", "rollingUpdate"))
    chosen_provider = provider or str(chart.dig(current, "rollout.provider", "argo"))
    say(f"deploying {image} (model v{version}) as {chosen_strategy}/{chosen_provider}")
    run_deploy(cluster, image, version, chosen_strategy, chosen_provider)


def resolve_image(
    cluster: Cluster, image: str | None, version: str | None, git_sha: str | None
) -> tuple[str, str]:
    """The image and model version to deploy: given, derived from each other, or production's."""
    from release import chart, images
    from release.errors import ReleaseError
    from training import registry
    from training.config import TrainingSettings

    if image is not None:
        try:
            _, tag = chart.split_image(image)
        except ValueError as exc:
            raise ReleaseError(str(exc)) from None
        return image, version or chart.version_of_tag(tag)
    if version is None:
        training = TrainingSettings()
        found = registry.alias_version(registry.connect(training), training.model_name, registry.PRODUCTION)
        if found is None:
            raise ReleaseError(f"{training.model_name} has no production version: pass --version or --image")
        version = str(found.version)
    try:
        tag = images.image_tag(version, git_sha or images.current_git_sha())
    except images.ImageError as exc:
        raise ReleaseError(str(exc)) from None
    return images.image_ref(cluster.settings.registry, images.SERVICE_IMAGE, tag), version


def _rollout_driver(namespace: str | None, helm_release: str | None, kube_context: str | None) -> Driver:
    """The driver of the installed release's strategy."""
    from release.drivers import installed_driver

    return installed_driver(cluster_for(namespace, helm_release, kube_context, None, None))


@rollout_app.command("status")
@handle_errors
def rollout_status(
    namespace: NamespaceOption = None,
    helm_release: HelmReleaseOption = None,
    kube_context: ContextOption = None,
) -> None:
    """Phase, step, weight, pauses and analysis runs with their measurements (native: tracks and weights)."""
    for line in _rollout_driver(namespace, helm_release, kube_context).status():
        say(line)


@rollout_app.command("promote")
@handle_errors
def rollout_promote(
    full: Annotated[
        bool, typer.Option("--full", help="Argo: skip the remaining steps and analysis.")
    ] = False,
    namespace: NamespaceOption = None,
    helm_release: HelmReleaseOption = None,
    kube_context: ContextOption = None,
) -> None:
    """Argo: next step / promote the preview. Native: the candidate takes all traffic (helm upgrade).

    Native blue/green: the preview is scaled to the active colour's size first, then the Service switches;
    the command then waits scaleDownDelaySeconds and scales the old colour down (Ctrl-C leaves it running).
    """
    driver = _rollout_driver(namespace, helm_release, kube_context)
    say(driver.promote(full=full))
    driver.settle()


@rollout_app.command("abort")
@handle_errors
def rollout_abort(
    namespace: NamespaceOption = None,
    helm_release: HelmReleaseOption = None,
    kube_context: ContextOption = None,
) -> None:
    """Argo: status.abort (back to the stable ReplicaSet). Native: drop the canary/preview (helm upgrade)."""
    say(_rollout_driver(namespace, helm_release, kube_context).abort())


@rollout_app.command("retry")
@handle_errors
def rollout_retry(
    namespace: NamespaceOption = None,
    helm_release: HelmReleaseOption = None,
    kube_context: ContextOption = None,
) -> None:
    """Argo: clear status.abort, the update starts again. Native: re-run the upgrade with its values."""
    say(_rollout_driver(namespace, helm_release, kube_context).retry())


@rollout_app.command("undo")
@handle_errors
def rollout_undo(
    to_revision: Annotated[
        int | None, typer.Option("--to-revision", help="Helm revision (default: the previous one).")
    ] = None,
    namespace: NamespaceOption = None,
    helm_release: HelmReleaseOption = None,
    kube_context: ContextOption = None,
) -> None:
    """Back to the previous version with helm rollback (Helm stays the only writer of the workload)."""
    say(_rollout_driver(namespace, helm_release, kube_context).undo(to_revision))


@handle_errors
def release(
    version: Annotated[
        str | None, typer.Option("--version", help="Version to release; default: challenger.")
    ] = None,
    strategy: Annotated[
        Literal["canary", "blueGreen", "shadow"],
        typer.Option(help="How the new version goes out; shadow: the shadow stage only, nobody served."),
    ] = "canary",
    shadow: Annotated[
        bool,
        typer.Option(
            "--shadow/--no-shadow",
            help="A shadow stage first: the candidate answers mirrored copies of live traffic and must "
            "pass the chart's shadow analysis before any user reaches it (needs rollout.shadow.enabled).",
        ),
    ] = False,
    provider: Annotated[
        ProviderName, typer.Option(help="argo (controller + AnalysisRun) or native.")
    ] = "argo",
    image: Annotated[
        str | None,
        typer.Option("--image", help="Use this already-pushed service image instead of building one."),
    ] = None,
    registry: Annotated[
        str | None, typer.Option(help="Registry prefix to push to [env: TABULA_RELEASE_REGISTRY].")
    ] = None,
    backend: Annotated[
        Literal["docker", "podman", "buildah"] | None,
        typer.Option(help="Image build backend [env: TABULA_RELEASE_IMAGE_BACKEND]."),
    ] = None,
    kind_cluster: Annotated[
        str | None, typer.Option(help="Load the image into this kind cluster instead of pushing it.")
    ] = None,
    git_sha: Annotated[str | None, typer.Option(help="Commit in the image tag; default: git HEAD.")] = None,
    prometheus_url: Annotated[
        str | None,
        typer.Option(
            help="Prometheus the release's evidence is read from [env: TABULA_RELEASE_PROMETHEUS_URL]."
        ),
    ] = None,
    auto_promote: Annotated[
        bool,
        typer.Option(
            "--auto-promote/--no-auto-promote",
            help="Promote manual pauses once the evidence rule holds (else leave every decision to you).",
        ),
    ] = True,
    retry: Annotated[
        bool, typer.Option("--retry", help="Release a version an earlier release rejected.")
    ] = False,
    namespace: NamespaceOption = None,
    helm_release: HelmReleaseOption = None,
    kube_context: ContextOption = None,
    values: ValuesOption = None,
    timeout: TimeoutOption = None,
) -> None:
    """Closed loop: ship the challenger, roll it out with analysis, then move `production` or roll back.

    `production` moves only on evidence read from Prometheus (--prometheus-url, required): enough
    prediction requests served by the candidate and enough successful analysis measurements. Timed pauses
    are left to the controller; manual pauses are promoted only on that evidence (--no-auto-promote: never).

    With a shadow stage (--shadow, or --strategy shadow for that stage alone) the candidate first runs as
    the shadow track and is judged on its paired differences from the champion; a fail rejects it before
    any user reaches it.

    Exit codes: 0 released (or nothing to do), 5 analysis failed / aborted (rolled back, production kept),
    6 cluster, Helm or image error, 7 timeout (the release stays in progress: re-run to resume).
    """
    from release.loop import ReleaseRequest
    from release.loop import release as run_release
    from training.config import TrainingSettings

    cluster = cluster_for(
        namespace,
        helm_release,
        kube_context,
        values,
        timeout,
        registry=registry,
        image_backend=backend,
        kind_cluster=kind_cluster,
        prometheus_url=prometheus_url,
    )
    from release.drivers import SHADOW, SHADOW_FIRST

    chosen = SHADOW_FIRST + strategy if shadow and strategy != SHADOW else strategy
    request = ReleaseRequest(
        version, chosen, provider, image, git_sha, auto_promote=auto_promote, retry=retry
    )
    released = run_release(cluster, TrainingSettings(), request)
    say(f"v{released} passed its shadow stage" if chosen == SHADOW else f"released v{released}")


def run_pipeline_on_cluster(
    training: TrainingSettings,
    *,
    strategy: StrategyName,
    provider: ProviderName,
    registry: str | None,
    kind_cluster: str | None,
    namespace: str | None,
    helm_release: str | None,
    kube_context: str | None,
    values: list[Path] | None,
    timeout: float | None,
) -> None:
    """``tabula pipeline --k8s``: the main job on the current cluster."""
    from release.cluster_pipeline import ClusterPipelineOptions, run

    cluster = cluster_for(
        namespace,
        helm_release,
        kube_context,
        values,
        timeout,
        example=training.resolved_example,
        registry=registry,
        kind_cluster=kind_cluster,
    )
    run(cluster, training, ClusterPipelineOptions(strategy, provider, git_sha=None))


def register(app: typer.Typer) -> None:
    """Add this module's commands to the root CLI."""
    app.command("deploy")(deploy)
    app.command("release")(release)
    app.add_typer(rollout_app, name="rollout")
