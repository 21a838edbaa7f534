"""One driver per release strategy: the only place that knows how a strategy deploys, waits and decides.

``tabula deploy``, ``tabula rollout status|promote|abort|retry|undo`` and the release loop call the
:class:`Driver` of the release's ``rollout.strategy``/``rollout.provider``; nothing else branches on them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from release import chart
from release.cluster import Cluster
from release.evidence import AnalysisSpec, Evidence, Prometheus
from release.kube import Deadline

# Release strategies of the shadow stage (release/drivers/shadow.py): alone, or ahead of a live strategy.
SHADOW = "shadow"
SHADOW_FIRST = "shadow+"


@dataclass(frozen=True)
class Watch:
    """What :meth:`Driver.follow` needs: the candidate, the analysis, and who decides manual pauses."""

    image: str
    version: str
    spec: AnalysisSpec | None
    prometheus: Prometheus
    auto_promote: bool
    deadline: Deadline
    # Records version tags at once (a stage's judgement survives an interruption of the next stage).
    record: Callable[[dict[str, str]], None] = lambda tags: None


@dataclass(frozen=True)
class Verdict:
    """How a followed rollout ended.

    ``completed``: the candidate serves every user. ``left_paused``: the rollout waits for the user's
    decision (nothing rolled back). ``evidence`` is what the driver read when it decided. ``tags``: the
    judgements of earlier stages (the shadow's), recorded on the version. ``shadow_only``: the shadow
    stage passed and the release stops there, as asked; the candidate never served anyone.
    """

    completed: bool
    reason: str
    evidence: Evidence | None
    left_paused: bool = False
    tags: dict[str, str] = field(default_factory=dict)
    shadow_only: bool = False


class Driver(Protocol):
    """A release strategy."""

    @property
    def mode(self) -> str:
        """``strategy/provider``, or ``rollingUpdate``."""
        ...

    def deploy(self, image: str, version: str, deadline: Deadline) -> str:
        """Make ``image`` the version every user gets, then wait until it serves; returns a state line."""
        ...

    def deploy_candidate(self, image: str, version: str) -> int | None:
        """Start ``image`` next to the stable version; the Helm revision, or None when it already runs."""
        ...

    def follow(self, watch: Watch) -> Verdict:
        """Wait for the rollout; promote manual pauses only on evidence, never shorten a timed one."""
        ...

    def promote(self, *, full: bool) -> str: ...

    def settle(self) -> None:
        """What a promotion by this driver leaves for later, done now: native blue/green scales the old
        colour down after ``scaleDownDelaySeconds`` (waiting for it); the others have nothing left."""
        ...

    def abort(self) -> str: ...

    def retry(self) -> str: ...

    def undo(self, to_revision: int | None) -> str: ...

    def roll_back(self, revision: int, deadline: Deadline) -> None:
        """Back to the state of Helm ``revision`` (the one before the release), then wait until it serves."""
        ...

    def status(self) -> list[str]: ...


def driver_for(cluster: Cluster, values: dict[str, Any] | None, strategy: str, provider: str) -> Driver:
    """The driver of ``strategy``/``provider`` for a release whose computed values are ``values``.

    ``shadow`` is the shadow stage alone; ``shadow+<strategy>`` the shadow stage, then that strategy.
    """
    from release.drivers.argo import ArgoBlueGreen, ArgoCanary
    from release.drivers.native import NativeBlueGreen, NativeCanary
    from release.drivers.rolling import RollingUpdate
    from release.drivers.shadow import ShadowStage

    if strategy == SHADOW:
        return ShadowStage(cluster, values, None)
    if strategy.startswith(SHADOW_FIRST):
        live = driver_for(cluster, values, strategy.removeprefix(SHADOW_FIRST), provider)
        return ShadowStage(cluster, values, live)
    if strategy == "rollingUpdate":
        return RollingUpdate(cluster, values)
    drivers: dict[tuple[str, str], type[ArgoCanary | ArgoBlueGreen | NativeCanary | NativeBlueGreen]] = {
        ("canary", "argo"): ArgoCanary,
        ("blueGreen", "argo"): ArgoBlueGreen,
        ("canary", "native"): NativeCanary,
        ("blueGreen", "native"): NativeBlueGreen,
    }
    return drivers[(strategy, provider)](cluster, values)


def installed_driver(cluster: Cluster) -> Driver:
    """The driver of the installed release."""
    values = cluster.installed_values()
    workload = chart.workload(values, cluster.release)
    strategy = workload.strategy
    if chart.dig(values, "rollout.shadow.enabled") and chart.dig(values, "rollout.shadow.tag"):
        strategy = SHADOW_FIRST + strategy  # a shadow stage runs: its lines and operations come first
    return driver_for(cluster, values, strategy, workload.provider)
