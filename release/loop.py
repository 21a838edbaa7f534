"""``tabula deploy`` and ``tabula release``: the closed release loop, on top of the strategy drivers.

The loop keeps MLflow and the cluster in step. Its progress is recorded on the model version as tags
(``release.state``: deploying -> analysing -> promoted | rejected, plus ``release.image``,
``release.stable_version``, ``release.previous_revision``, ``release.revision``), so a re-run after an
interruption resumes the same release, and a different release refuses to start over it.
``production`` moves last, and only on evidence the loop read itself (:mod:`release.evidence`).

Entry point for tests and callers: ``release(cluster, training, ReleaseRequest(...))`` returns the
released version or raises :class:`ReleaseRejectedError` (exit 5).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import TYPE_CHECKING

from release import chart
from release.cluster import Cluster
from release.drivers import SHADOW_FIRST, Verdict, Watch, driver_for
from release.drivers.shadow import SHADOW_RESULT
from release.errors import ClusterTimeoutError, ReleaseError, ReleaseRejectedError
from training import registry
from training.config import TrainingSettings

if TYPE_CHECKING:
    from mlflow import MlflowClient

STATE = "release.state"


class ReleaseState(StrEnum):
    """``release.state`` of a model version."""

    deploying = "deploying"
    analysing = "analysing"
    promoted = "promoted"
    rejected = "rejected"
    shadowed = "shadowed"  # passed the shadow stage of a shadow-only release; never served anyone


IN_PROGRESS = (ReleaseState.deploying, ReleaseState.analysing)


@dataclass(frozen=True)
class ReleaseRequest:
    """What to release and how; ``auto_promote=False`` leaves every manual decision to the user."""

    version: str | None = None
    strategy: str = "canary"
    provider: str = "argo"
    image: str | None = None
    git_sha: str | None = None
    auto_promote: bool = True
    retry: bool = False


def deploy(cluster: Cluster, image: str, version: str, strategy: str, provider: str) -> str:
    """``tabula deploy``: make ``image`` the served version with the chosen strategy, then wait."""
    current = cluster.values()
    if current is not None and cluster.settings.prometheus_url:
        cluster.require_scraped(cluster.prometheus())
    driver = driver_for(cluster, current, strategy, provider)
    state = driver.deploy(image, version, cluster.deadline())
    cluster.log(state)
    return state


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
            return str(candidate.version), str(state)
    return None


def build_and_ship(cluster: Cluster, training: TrainingSettings, version: str, git_sha: str | None) -> str:
    """Bento -> service image (the one builder, :func:`release.images.build_images`) -> registry or kind."""
    import subprocess
    import tempfile

    from release import images
    from service.packaging import PackagingError, build_bento

    settings = cluster.settings
    try:
        bento = build_bento(training.model_name, version, training.tracking_uri)
        cluster.log(f"built Bento {bento}")
        backend = images.Backend(settings.image_backend)
        [ref] = images.build_images(
            backend=backend,
            registry=settings.registry,
            only=images.Which.service,
            bento=bento,
            model_version=version,
            git_sha=git_sha,
            image=None,
            skaffold=False,
            options=images.BuildOptions(
                backend=backend,
                base_image=images.DEFAULT_BASE_IMAGE,
                ca_bundle=settings.image_ca_bundle,
                network=settings.image_network,
            ),
            extra_tags=[],
            push=settings.kind_cluster is None,
        )
        cluster.log(f"built image {ref}" + ("" if settings.kind_cluster else " and pushed it"))
        if settings.kind_cluster:
            if backend is images.Backend.docker:
                images.run(["kind", "load", "docker-image", ref, "--name", settings.kind_cluster])
            else:
                with tempfile.TemporaryDirectory(prefix="tabula-image-") as scratch:
                    archive = f"{scratch}/image.tar"
                    images.run([backend.value, "save", "--output", archive, ref])
                    images.run(["kind", "load", "image-archive", archive, "--name", settings.kind_cluster])
            cluster.log(f"loaded {ref} into kind cluster {settings.kind_cluster}")
    except (PackagingError, images.ImageError, subprocess.SubprocessError) as exc:
        raise ReleaseError(f"cannot build or ship the image of v{version}: {exc}") from None
    return ref


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
    if state == ReleaseState.rejected and not request.retry:
        raise ReleaseError(
            f"v{version} was rejected at {tags.get('release.finished_at')}: {tags.get('release.reason')}; "
            "pass --retry to release it again"
        )
    if other := other_release_in_progress(client, name, version):
        raise ReleaseError(
            f"the release of v{other[0]} is in progress ({STATE}={other[1]}): resume it with "
            f"`tabula release --version {other[0]}`, or `tabula rollout abort` it and re-run that command"
        )
    prometheus = cluster.prometheus()  # no evidence without it: fail before anything changes
    cluster.require_scraped(prometheus)
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
                f"cluster disagree; `tabula promote --version {version} --force` or deploy v{production}"
            )
        if production not in (stable, version):
            raise ReleaseError(
                f"the cluster serves v{stable} but production is v{production}: registry and cluster "
                f"disagree; deploy production first (`tabula deploy --version {production}`)"
            )
        if production == version:
            log(f"note: the training gate already made v{version} production; the cluster serves v{stable}")
        image = request.image or build_and_ship(cluster, training, version, request.git_sha)
        previous_revision = cluster.helm.revision(cluster.release)
        started = {
            STATE: ReleaseState.deploying.value,
            "release.image": image,
            "release.strategy": f"{request.strategy}/{request.provider}",
            "release.stable_version": stable,
            "release.previous_revision": str(previous_revision),
            "release.started_at": now(),
        }
        set_tags(client, name, version, started)
        tags |= started
        log(f"recorded {STATE}=deploying on v{version} (rollback target: Helm revision {previous_revision})")

    strategy, provider = tags["release.strategy"].split("/")
    if resuming and strategy.startswith(SHADOW_FIRST) and tags.get(SHADOW_RESULT) == "passed":
        strategy = strategy.removeprefix(SHADOW_FIRST)
        log(f"v{version} passed its shadow stage before the interruption: resuming with {strategy}")
    driver = driver_for(cluster, values, strategy, provider)
    revision = driver.deploy_candidate(image, version)
    if revision is None:
        log(f"the cluster already runs {image} as the candidate: not upgrading again")
    else:
        set_tags(client, name, version, {"release.revision": str(revision)})
    set_tags(client, name, version, {STATE: ReleaseState.analysing.value})

    deadline = cluster.deadline()
    hint = (
        f"; the release of v{version} is still in progress: re-run `tabula release --version {version}` "
        "to follow it, or `tabula rollout abort` and re-run to roll it back"
    )
    watch = Watch(
        image,
        version,
        cluster.analysis(),
        prometheus,
        request.auto_promote,
        deadline,
        record=partial(set_tags, client, name, version),
    )
    try:
        verdict = driver.follow(watch)
    except ClusterTimeoutError as exc:
        raise ClusterTimeoutError(f"{exc}{hint}") from None
    except KeyboardInterrupt:
        log(f"interrupted{hint}")
        raise

    if verdict.evidence is not None:
        for line in verdict.evidence.lines():
            log(line)
        set_tags(client, name, version, verdict.evidence.tags())
    set_tags(client, name, version, verdict.tags)
    if verdict.shadow_only:
        set_tags(client, name, version, {STATE: ReleaseState.shadowed.value, "release.finished_at": now()})
        log(f"tagged v{version} {STATE}=shadowed: {verdict.reason}; production stays at v{production}")
        return version
    # The loop's own check, whatever the driver decided: no evidence, no promotion.
    reason = verdict.reason if not verdict.completed else None
    if verdict.completed:
        reason = verdict.evidence.verdict(watch.spec) if verdict.evidence else "no evidence: nothing was read"
    if reason is None:
        finish_promoted(cluster, client, name, version, production, tags["release.strategy"], verdict)
        # production has moved: what the promotion left for later (native blue/green's scale-down
        # after scaleDownDelaySeconds) no longer decides anything, and an interruption here loses nothing.
        driver.settle()
        return version
    log(f"v{version} failed its rollout: {reason}")
    if verdict.left_paused:
        log("left as it is for your decision (--no-auto-promote): `tabula rollout promote` or `abort`")
    else:
        driver.roll_back(int(tags["release.previous_revision"]), deadline)
    set_tags(
        client,
        name,
        version,
        {STATE: ReleaseState.rejected.value, "release.reason": reason[:5000], "release.finished_at": now()},
    )
    if production == version and stable != version:
        registry.call(
            lambda: client.set_registered_model_alias(name, registry.PRODUCTION, stable), "move the alias"
        )
        log(f"production moved back to v{stable}, which is what the cluster serves")
    else:
        log(f"production stays at v{production}")
    log(f"tagged v{version} {STATE}=rejected")
    what = "left paused" if verdict.left_paused else "rolled back"
    raise ReleaseRejectedError(f"v{version} was rejected and {what}: {reason}")


def finish_promoted(
    cluster: Cluster,
    client: MlflowClient,
    name: str,
    version: str,
    production: str | None,
    strategy: str,
    verdict: Verdict,
) -> str:
    version_tags = dict(registry.get_version(client, name, version).tags or {})
    set_tags(
        client,
        name,
        version,
        {
            STATE: ReleaseState.promoted.value,
            "release.result": verdict.reason[:5000],
            "release.finished_at": now(),
            "release.offline_decision": version_tags.get(registry.DECISION_TAG, ""),
        },
    )
    cluster.log(f"tagged v{version} {STATE}=promoted: {verdict.reason}")
    if production == version:
        cluster.log(f"production already points at v{version}")
        return version
    decision = registry.Decision(version, "promoted", f"released as {strategy}: {verdict.reason}", production)
    registry.apply(client, name, decision)
    cluster.log(f"moved production from v{production} to v{version}")
    return version
