"""``housing deploy`` and ``housing release``: Helm upgrades, waiting, and the closed release loop.

The release loop keeps MLflow and the cluster in step. Its progress is recorded on the model version
as tags (``release.state``: deploying -> analysing -> promoted | rejected, plus ``release.image``,
``release.stable_version``, ``release.previous_revision``, ``release.revision``), so a re-run after an
interruption resumes the same release, and a different release refuses to start over it.
``production`` moves last, only after the rollout completed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from release import analysis, chart
from release.config import ReleaseSettings
from release.errors import ClusterTimeoutError, ReleaseError, ReleaseRejectedError
from release.helm import Helm
from release.kube import Deadline, Kube, pod_problem
from release.rollouts import POD_HASH_LABEL, Rollouts, current_analysis, describe_step, image_of
from training import registry
from training.config import TrainingSettings

if TYPE_CHECKING:
    from mlflow import MlflowClient

STATE = "release.state"
IN_PROGRESS = ("deploying", "analysing")
Log = Callable[[str], None]


@dataclass
class Cluster:
    """Everything a cluster command talks to."""

    settings: ReleaseSettings
    helm: Helm
    kube: Kube
    log: Log

    @property
    def release(self) -> str:
        return self.settings.release_name

    def values(self) -> dict[str, Any] | None:
        return self.helm.get_values(self.release, computed=True)

    def installed_values(self) -> dict[str, Any]:
        values = self.values()
        if values is None:
            raise ReleaseError(
                f"Helm release {self.release!r} is not installed in namespace {self.settings.namespace}: "
                "install it first with `housing deploy`"
            )
        return values

    def upgrade(self, overrides: dict[str, Any]) -> int:
        """Check the cluster serves every kind the chart will render, then ``helm upgrade --install``."""
        user_values = self.helm.get_values(self.release, computed=False) or {}
        objects = self.helm.template(
            self.release, self.settings.chart, user_values, self.settings.values_files, overrides
        )
        self.kube.require_kinds(objects)
        revision = self.helm.upgrade_install(
            self.release, self.settings.chart, self.settings.values_files, overrides
        )
        changes = ", ".join(f"{key}={value}" for key, value in flatten(overrides))
        self.log(f"helm upgrade --install {self.release}: revision {revision} ({changes})")
        return revision

    def deadline(self) -> Deadline:
        return Deadline(self.settings.timeout_seconds, self.settings.poll_seconds)


def flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            pairs += flatten(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def serving_overrides(
    current: dict[str, Any] | None, image: str, version: str, strategy: str, provider: str
) -> dict[str, Any]:
    """Values that make ``image`` the version every user gets (a plain deploy, or a promotion)."""
    repository, tag = chart.split_image(image)
    values = {
        "image": {"repository": repository, "tag": tag},
        "model": {"version": version},
        "rollout": {"strategy": strategy, "provider": provider},
    }
    if strategy == "canary" and provider == "native":
        values = chart.merge(values, {"rollout": {"native": {"canary": {"tag": "", "modelVersion": ""}}}})
    elif strategy == "blueGreen" and provider == "native":
        active = str(chart.dig(current or {}, "rollout.native.blueGreen.activeColor", "blue"))
        values = chart.merge(values, chart.nested(f"rollout.native.blueGreen.{active}Tag", tag))
    return values


def candidate_overrides(
    current: dict[str, Any], image: str, version: str, strategy: str, provider: str
) -> dict[str, Any]:
    """Values that start a release of ``image`` next to the stable version."""
    if provider == "argo":
        return serving_overrides(current, image, version, strategy, provider)
    repository, tag = chart.split_image(image)
    stable = chart.workload(current, "")
    if repository != stable.image_repository:
        raise ReleaseError(
            f"native releases keep one image repository: {repository} differs from the release's "
            f"{stable.image_repository}"
        )
    values: dict[str, Any] = {"rollout": {"strategy": strategy, "provider": provider}}
    if strategy == "canary":
        return chart.merge(values, {"rollout": {"native": {"canary": {"tag": tag, "modelVersion": version}}}})
    active = str(chart.dig(current, "rollout.native.blueGreen.activeColor", "blue"))
    idle = "green" if active == "blue" else "blue"
    return chart.merge(
        values,
        # Pin the active colour's tag so a changed image.tag can never move it.
        chart.nested(f"rollout.native.blueGreen.{active}Tag", stable.image_tag),
        chart.nested(f"rollout.native.blueGreen.{idle}Tag", tag),
    )


def native_promotion_overrides(current: dict[str, Any], image: str, version: str) -> dict[str, Any]:
    """Native mode: the new version takes all traffic."""
    repository, tag = chart.split_image(image)
    strategy = str(chart.dig(current, "rollout.strategy"))
    values: dict[str, Any] = {"image": {"repository": repository, "tag": tag}, "model": {"version": version}}
    if strategy == "canary":
        return chart.merge(values, {"rollout": {"native": {"canary": {"tag": "", "modelVersion": ""}}}})
    active = str(chart.dig(current, "rollout.native.blueGreen.activeColor", "blue"))
    idle = "green" if active == "blue" else "blue"
    return chart.merge(values, chart.nested("rollout.native.blueGreen.activeColor", idle))


def server_deployments(values: dict[str, Any], release: str) -> list[str]:
    """The Deployments a non-Argo mode renders."""
    workload = chart.workload(values, release)
    if workload.strategy == "canary" and workload.native:
        canary = chart.dig(values, "rollout.native.canary.tag")
        return [workload.name] + ([chart.suffixed(values, release, "canary")] if canary else [])
    if workload.strategy == "blueGreen" and workload.native:
        blue_green = chart.dig(values, "rollout.native.blueGreen", {})
        colours = [c for c in chart.COLORS if c == "blue" or blue_green.get(f"{c}Tag")]
        return [chart.suffixed(values, release, colour) for colour in colours]
    return [workload.name]


# --- Argo --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    completed: bool
    detail: str


def follow_rollout(
    cluster: Cluster, name: str, image: str, *, auto_promote: bool, deadline: Deadline
) -> Outcome:
    """Watch an Argo Rollout of ``image`` until it completes, aborts or degrades; promotes pauses if asked."""
    rollouts = Rollouts(cluster.kube)
    last = ""
    while True:
        rollout = rollouts.get(name)
        status = rollout.get("status", {})
        if image_of(rollout) != image:
            raise ReleaseError(
                f"Rollout {name} now runs {image_of(rollout)}, not {image}: another deploy replaced it"
            )
        run = current_analysis(rollout) or {}
        progress = f"{status.get('phase', 'Progressing')}: {describe_step(rollout)}"
        if run:
            progress += f"; analysis {run.get('name')} {run.get('status')}"
        if progress != last:
            cluster.log(f"Rollout {name} {progress}")
            last = progress
        if status.get("abort"):
            reason = run.get("message") if run.get("status") in {"Failed", "Error"} else None
            return Outcome(False, reason or status.get("message") or "aborted by an operator")
        generation_seen = str(status.get("observedGeneration")) == str(rollout["metadata"].get("generation"))
        if (
            status.get("phase") == "Healthy"
            and generation_seen
            and status.get("currentPodHash")
            and status.get("currentPodHash") == status.get("stableRS")
        ):
            return Outcome(True, f"Rollout {name} completed ({describe_step(rollout)})")
        if status.get("phase") == "Degraded":
            return Outcome(False, status.get("message") or "the Rollout is degraded")
        if status.get("currentPodHash"):
            for pod in cluster.kube.pods(f"{POD_HASH_LABEL}={status['currentPodHash']}"):
                if problem := pod_problem(pod):
                    return Outcome(False, problem)
        if status.get("phase") == "Paused" and status.get("pauseConditions") and not status.get("abort"):
            if auto_promote and run.get("status") not in {"Failed", "Error", "Inconclusive"}:
                cluster.log(rollouts.promote(name, full=False))
            elif not auto_promote:
                cluster.log(f"Rollout {name} waits for `housing rollout promote` (or abort)")
        deadline.sleep(f"Rollout {name} to finish", f" ({last})")


def wait_ready(cluster: Cluster, values: dict[str, Any], deadline: Deadline) -> str:
    """Wait until the release's workload serves; returns a one-line state."""
    workload = chart.workload(values, cluster.release)
    if not workload.argo:
        cluster.kube.wait_deployments_ready(
            server_deployments(values, cluster.release), deadline, cluster.log
        )
        return f"{workload.mode} ready"
    rollouts = Rollouts(cluster.kube)
    while True:
        rollout = rollouts.get(workload.name)
        status = rollout.get("status", {})
        generation_seen = str(status.get("observedGeneration")) == str(rollout["metadata"].get("generation"))
        phase = status.get("phase")
        if generation_seen and phase == "Healthy":
            return f"Rollout {workload.name} healthy ({describe_step(rollout)})"
        if generation_seen and phase == "Paused":
            return (
                f"Rollout {workload.name} paused: {describe_step(rollout)}; `housing rollout promote` goes on"
            )
        if generation_seen and phase == "Degraded":
            raise ReleaseError(f"Rollout {workload.name} is degraded: {status.get('message')}")
        if status.get("currentPodHash"):
            for pod in cluster.kube.pods(f"{POD_HASH_LABEL}={status['currentPodHash']}"):
                if problem := pod_problem(pod):
                    raise ReleaseError(f"Rollout {workload.name} cannot become ready: {problem}")
        deadline.sleep(f"Rollout {workload.name} to become ready", f" (phase {phase})")


def deploy(cluster: Cluster, image: str, version: str, strategy: str, provider: str) -> str:
    """``housing deploy``: make ``image`` the served version with the chosen strategy, then wait."""
    current = cluster.values()
    overrides = serving_overrides(current, image, version, strategy, provider)
    cluster.upgrade(overrides)
    state = wait_ready(cluster, cluster.installed_values(), cluster.deadline())
    cluster.log(state)
    return state


# --- the release loop ------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseRequest:
    version: str | None
    strategy: str
    provider: str
    image: str | None
    git_sha: str | None
    auto_promote: bool
    retry: bool


def set_tags(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for key, value in tags.items():
        registry.call(partial(client.set_model_version_tag, name, version, key, value), f"tag v{version}")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def other_release_in_progress(client: MlflowClient, name: str, version: str) -> tuple[str, str] | None:
    versions = registry.call(lambda: client.search_model_versions(f"name = '{name}'"), "list versions")
    for candidate in versions:
        state = (candidate.tags or {}).get(STATE)
        if state in IN_PROGRESS and str(candidate.version) != version:
            return str(candidate.version), state
    return None


def build_and_ship(cluster: Cluster, training: TrainingSettings, version: str, git_sha: str | None) -> str:
    """Bento -> service image -> registry (or kind); returns the image reference."""
    import subprocess
    import tempfile

    from service import images
    from service.packaging import PackagingError, build_bento

    settings = cluster.settings
    try:
        bento = build_bento(training.model_name, version, training.tracking_uri)
        cluster.log(f"built Bento {bento}")
        ref = images.image_ref(
            settings.registry,
            images.SERVICE_IMAGE,
            images.image_tag(version, git_sha or images.current_git_sha()),
        )
        backend = images.Backend(settings.image_backend)
        options = images.BuildOptions(
            backend=backend,
            base_image=images.DEFAULT_BASE_IMAGE,
            ca_bundle=settings.image_ca_bundle,
            network=settings.image_network,
        )
        images.run(images.service_build_command(bento, ref, options))
        cluster.log(f"built image {ref}")
        if settings.kind_cluster:
            if backend is images.Backend.docker:
                images.run(["kind", "load", "docker-image", ref, "--name", settings.kind_cluster])
            else:
                with tempfile.TemporaryDirectory(prefix="housing-image-") as scratch:
                    archive = f"{scratch}/image.tar"
                    images.run([backend.value, "save", "--output", archive, ref])
                    images.run(["kind", "load", "image-archive", archive, "--name", settings.kind_cluster])
            cluster.log(f"loaded {ref} into kind cluster {settings.kind_cluster}")
        else:
            images.run(images.push_command(ref, backend))
            cluster.log(f"pushed {ref}")
    except (PackagingError, images.ImageError, subprocess.SubprocessError) as exc:
        raise ReleaseError(f"cannot build or ship the image of v{version}: {exc}") from None
    return ref


def candidate_deployed(values: dict[str, Any], image: str) -> bool:
    """Whether the release's values already run ``image`` as the candidate (a resumed release)."""
    workload = chart.workload(values, "")
    _, tag = chart.split_image(image)
    if workload.argo:
        return f"{workload.image_repository}:{workload.image_tag}" == image
    if workload.strategy == "canary":
        return bool(chart.dig(values, "rollout.native.canary.tag") == tag)
    return bool(tag) and tag in (
        chart.dig(values, "rollout.native.blueGreen.blueTag"),
        chart.dig(values, "rollout.native.blueGreen.greenTag"),
    )


def release(cluster: Cluster, training: TrainingSettings, request: ReleaseRequest) -> str:
    """The closed loop; returns the released version or raises :class:`ReleaseRejectedError`."""
    log, name = cluster.log, training.model_name
    client = registry.connect(training)
    if request.version is None:
        found = registry.alias_version(client, name, registry.CHALLENGER)
        if found is None:
            raise ReleaseError(f"{name} has no challenger to release: train first or pass --version")
    else:
        found = registry.get_version(client, name, request.version)
    version = str(found.version)
    tags = dict(found.tags or {})
    production_mv = registry.alias_version(client, name, registry.PRODUCTION)
    production = str(production_mv.version) if production_mv else None
    log(f"releasing {name} v{version} (production: v{production})")

    values = cluster.installed_values()
    serving = chart.workload(values, cluster.release)
    state = tags.get(STATE)
    resuming = state in IN_PROGRESS
    if state == "rejected" and not request.retry:
        raise ReleaseError(
            f"v{version} was rejected at {tags.get('release.finished_at')}: {tags.get('release.reason')}; "
            "pass --retry to release it again"
        )
    if other := other_release_in_progress(client, name, version):
        raise ReleaseError(
            f"the release of v{other[0]} is in progress ({STATE}={other[1]}): resume it with "
            f"`housing release --version {other[0]}`, or `housing rollout abort` it and re-run that command"
        )
    if resuming:
        stable = tags["release.stable_version"]
        image = tags["release.image"]
        log(f"resuming the release of v{version} ({STATE}={state}, stable v{stable}, image {image})")
    else:
        stable = serving.model_version
        if stable == version:
            if production == version:
                log(f"v{version} is production and the cluster serves it: nothing to release")
                return version
            raise ReleaseError(
                f"the cluster already serves v{version} but production is v{production}: registry and "
                "cluster "
                f"disagree; `housing promote --version {version} --force` or deploy v{production}"
            )
        if production not in (stable, version):
            raise ReleaseError(
                f"the cluster serves v{stable} but production is v{production}: registry and cluster "
                "disagree; "
                f"deploy production first (`housing deploy --version {production}`)"
            )
        if production == version:
            log(f"note: the training gate already made v{version} production; the cluster serves v{stable}")
        if request.provider == "native" and not cluster.settings.prometheus_url:
            raise ReleaseError(
                "native releases run the analysis here: set --prometheus-url (HOUSING_RELEASE_PROMETHEUS_URL)"
            )
        image = request.image or build_and_ship(cluster, training, version, request.git_sha)
        previous_revision = cluster.helm.revision(cluster.release)
        set_tags(
            client,
            name,
            version,
            {
                STATE: "deploying",
                "release.image": image,
                "release.strategy": f"{request.strategy}/{request.provider}",
                "release.stable_version": stable,
                "release.previous_revision": str(previous_revision),
                "release.started_at": now(),
            },
        )
        log(f"recorded {STATE}=deploying on v{version} (rollback target: Helm revision {previous_revision})")
        tags = {
            **tags,
            "release.strategy": f"{request.strategy}/{request.provider}",
            "release.previous_revision": str(previous_revision),
        }

    strategy, provider = tags["release.strategy"].split("/")
    if not candidate_deployed(values, image):
        revision = cluster.upgrade(candidate_overrides(values, image, version, strategy, provider))
        set_tags(client, name, version, {"release.revision": str(revision)})
    else:
        log(f"the cluster already runs {image} as the candidate: not upgrading again")
    set_tags(client, name, version, {STATE: "analysing"})

    deadline = cluster.deadline()
    hint = (
        f"; the release of v{version} is still in progress: re-run `housing release --version {version}` "
        "to follow "
        "it, or `housing rollout abort` and re-run to roll it back"
    )
    try:
        if provider == "argo":
            outcome = follow_rollout(
                cluster,
                chart.workload(values, cluster.release).name,
                image,
                auto_promote=request.auto_promote,
                deadline=deadline,
            )
        else:
            outcome = native_analysis(cluster, version, deadline)
    except ClusterTimeoutError as exc:
        raise ClusterTimeoutError(f"{exc}{hint}") from None
    except KeyboardInterrupt:
        log(f"interrupted{hint}")
        raise

    if outcome.completed:
        return finish_promoted(
            cluster, client, name, version, production, strategy, provider, outcome.detail, deadline
        )
    reason = outcome.detail
    log(f"v{version} failed its rollout: {reason}")
    roll_back(cluster, int(tags["release.previous_revision"]), stable, deadline)
    set_tags(
        client,
        name,
        version,
        {STATE: "rejected", "release.reason": reason[:5000], "release.finished_at": now()},
    )
    if production == version and stable != version:
        registry.call(
            lambda: client.set_registered_model_alias(name, registry.PRODUCTION, stable), "move the alias"
        )
        log(f"production moved back to v{stable}, which is what the cluster serves")
    else:
        log(f"production stays at v{production}")
    log(f"tagged v{version} {STATE}=rejected")
    raise ReleaseRejectedError(f"v{version} was rejected and rolled back: {reason}")


def native_analysis(cluster: Cluster, version: str, deadline: Deadline) -> Outcome:
    """Wait for the candidate track, then run the chart's analysis queries against Prometheus."""
    values = cluster.installed_values()
    cluster.kube.wait_deployments_ready(server_deployments(values, cluster.release), deadline, cluster.log)
    user_values = cluster.helm.get_values(cluster.release, computed=False) or {}
    objects = cluster.helm.template(
        cluster.release, cluster.settings.chart, user_values, cluster.settings.values_files, {}
    )
    spec = analysis.analysis_spec(objects, chart.suffixed(values, cluster.release, "analysis"))
    candidate, stable_track = native_tracks(values)
    metrics = (
        analysis.metrics_of(spec, {"candidate-track": candidate, "stable-track": stable_track})
        if spec
        else []
    )
    assert cluster.settings.prometheus_url is not None  # noqa: S101 - checked before the release started
    passed, summary = analysis.run_analysis(cluster.settings.prometheus_url, metrics, cluster.log)
    if not passed:
        return Outcome(False, summary)
    image = f"{chart.dig(values, 'image.repository')}:{candidate_tag(values)}"
    cluster.upgrade(native_promotion_overrides(values, image, version))
    cluster.kube.wait_deployments_ready(
        server_deployments(cluster.installed_values(), cluster.release), deadline, cluster.log
    )
    return Outcome(True, summary)


def native_tracks(values: dict[str, Any]) -> tuple[str, str]:
    """(candidate, stable) values of the native pods' ``housing.io/track`` label."""
    if chart.dig(values, "rollout.strategy") == "canary":
        return "canary", "stable"
    active = str(chart.dig(values, "rollout.native.blueGreen.activeColor", "blue"))
    return ("green" if active == "blue" else "blue"), active


def candidate_tag(values: dict[str, Any]) -> str:
    if chart.dig(values, "rollout.strategy") == "canary":
        return str(chart.dig(values, "rollout.native.canary.tag"))
    active = str(chart.dig(values, "rollout.native.blueGreen.activeColor", "blue"))
    idle = "green" if active == "blue" else "blue"
    return str(chart.dig(values, f"rollout.native.blueGreen.{idle}Tag"))


def roll_back(cluster: Cluster, revision: int, stable: str, deadline: Deadline) -> None:
    """Put the workload back where it was before the release: abort (Argo), then Helm's earlier revision."""
    values = cluster.installed_values()
    workload = chart.workload(values, cluster.release)
    if workload.argo:
        rollout = Rollouts(cluster.kube).get(workload.name)
        if not rollout.get("status", {}).get("abort"):
            cluster.log(Rollouts(cluster.kube).abort(workload.name))
    cluster.helm.rollback(cluster.release, revision)
    cluster.log(f"helm rollback {cluster.release} {revision}: desired state is v{stable} again")
    cluster.log(wait_ready(cluster, cluster.installed_values(), deadline))


def finish_promoted(
    cluster: Cluster,
    client: MlflowClient,
    name: str,
    version: str,
    production: str | None,
    strategy: str,
    provider: str,
    detail: str,
    deadline: Deadline,
) -> str:
    del deadline  # the rollout is complete; nothing left to wait for
    version_tags = dict(registry.get_version(client, name, version).tags or {})
    set_tags(
        client,
        name,
        version,
        {
            STATE: "promoted",
            "release.result": detail[:5000],
            "release.finished_at": now(),
            "release.offline_decision": version_tags.get(registry.DECISION_TAG, ""),
        },
    )
    cluster.log(f"tagged v{version} {STATE}=promoted: {detail}")
    if production == version:
        cluster.log(f"production already points at v{version}")
        return version
    decision = registry.Decision(
        version, "promoted", f"released as {strategy}/{provider}: {detail}", production
    )
    registry.apply(client, name, decision)
    cluster.log(f"moved production from v{production} to v{version}")
    return version
