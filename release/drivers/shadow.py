"""The shadow stage: the candidate answers mirrored copies of live traffic before it serves anyone.

The candidate runs as the chart's shadow track (``rollout.shadow.tag``: a Deployment of its own, for Argo
and native releases alike, since Argo Rollouts mirrors only through a service mesh). The stable pods copy
a sample of their answered requests to it (service/shadow.py) and it pairs its answers with the
champion's. This driver waits until the shadow has made ``rollout.shadow.minPairs`` pairs since its pods
became ready, measures the chart's shadow analysis (``<fullname>-shadow-analysis``: p95 absolute
difference or disagreement rate, error rate, p95 latency) the way the native analysis measures, and:

- on a fail, leaves the rest to the loop, which rolls back to the revision before the shadow (the
  shadow track and the mirroring go) and tags the version ``rejected``: nobody was ever served by it;
- on a pass, removes the shadow and hands the release to the live strategy's driver, or stops there
  when the release asked for the shadow stage only.

Every judgement is in :attr:`Verdict.tags` (``release.shadow.*``), which the loop records on the version.
"""

from __future__ import annotations

from typing import Any

from release import chart
from release.analysis import run_analysis
from release.cluster import Cluster
from release.drivers import Driver, Verdict, Watch
from release.errors import ClusterTimeoutError, ReleaseError
from release.evidence import VALUES_KEPT, AnalysisSpec, Evidence, analysis_spec, count, timestamp
from release.kube import Deadline, deployment_summary, ready_since

SHADOW_TRACK = "shadow"
TRACK_LABEL = "tabula.io/track"
TAG_PREFIX = "release.shadow."
SHADOW_RESULT = f"{TAG_PREFIX}result"


class ShadowStage:
    """A release whose first stage is a shadow; ``live`` is the strategy that follows (None: stop there)."""

    def __init__(self, cluster: Cluster, values: dict[str, Any] | None, live: Driver | None) -> None:
        self.cluster = cluster
        self.values = values or {}
        self.live = live
        self.live_started = False

    @property
    def mode(self) -> str:
        return f"shadow+{self.live.mode}" if self.live else "shadow"

    # --- names ---------------------------------------------------------------------------------------
    def deployment_name(self, values: dict[str, Any]) -> str:
        return chart.suffixed(values, self.cluster.release, SHADOW_TRACK)

    @staticmethod
    def shadow_tag(values: dict[str, Any]) -> str:
        return str(chart.dig(values, "rollout.shadow.tag") or "")

    @staticmethod
    def overrides(tag: str, version: str) -> dict[str, Any]:
        return chart.nested("rollout.shadow", {"tag": tag, "modelVersion": version})

    def spec(self) -> AnalysisSpec:
        values = self.cluster.installed_values()
        found = analysis_spec(
            self.cluster.render({}), chart.suffixed(values, self.cluster.release, "shadow-analysis")
        )
        if found is None:
            raise ReleaseError("the chart renders no shadow analysis: set rollout.shadow.enabled=true")
        return found

    # --- deploying -----------------------------------------------------------------------------------
    def deploy(self, image: str, version: str, deadline: Deadline) -> str:
        if self.live is None:
            raise ReleaseError(
                "a shadow serves nobody: deploy with --strategy canary|blueGreen|rollingUpdate"
            )
        return self.live.deploy(image, version, deadline)

    def deploy_candidate(self, image: str, version: str) -> int | None:
        """The candidate as the shadow track; None when it already runs there."""
        if not chart.dig(self.values, "rollout.shadow.enabled", False):
            raise ReleaseError(
                "rollout.shadow.enabled is false: turn it on first with `tabula deploy -f <values>` (the "
                "serving pods restart once to mount the mirror control; later shadows never restart them)"
            )
        repository, tag = chart.split_image(image)
        stable = chart.workload(self.values, self.cluster.release)
        if repository != stable.image_repository:
            raise ReleaseError(
                f"the shadow runs from the release's image repository {stable.image_repository}, "
                f"not {repository}"
            )
        if self.shadow_tag(self.values) == tag:
            return None
        return self.cluster.upgrade(self.overrides(tag, version))

    # --- following -----------------------------------------------------------------------------------
    def evidence(self, watch: Watch, spec: AnalysisSpec, phase: str, message: str, records: Any) -> Evidence:
        instance = f"app.kubernetes.io/instance={self.cluster.release}"
        since = ready_since(self.cluster.kube.pods(f"{instance},{TRACK_LABEL}={SHADOW_TRACK}"))
        window = self.cluster.clock.now() - timestamp(since) if since else None
        pairs = None if window is None else watch.prometheus.requests(spec, SHADOW_TRACK, window)
        return Evidence(
            candidate_track=SHADOW_TRACK,
            stable_track=None,
            window=window,
            candidate_requests=pairs,
            stable_requests=None,
            run_phase=phase,
            run_message=message,
            metrics=records,
        )

    def judge(self, watch: Watch) -> tuple[str | None, Evidence]:
        """Why the shadow fails (None: it passed), and what was read."""
        log, spec = self.cluster.log, self.spec()
        values = self.cluster.installed_values()
        readiness = Deadline(
            min(spec.measuring_seconds(), watch.deadline.remaining()),
            watch.deadline.poll_seconds,
            self.cluster.clock,
        )
        try:
            self.cluster.kube.wait_deployments_ready([self.deployment_name(values)], readiness, log)
        except ClusterTimeoutError as timeout:
            evidence = self.evidence(watch, spec, "none", "", ())
            return evidence.verdict(spec) or f"no evidence: the shadow is not ready: {timeout}", evidence
        log(f"shadow analysis of v{watch.version}: {', '.join(m.name for m in spec.metrics)}")
        run = run_analysis(
            watch.prometheus,
            spec.metrics,
            {"candidate-track": SHADOW_TRACK, "stable-track": "stable"},
            self.cluster.clock,
            log,
            watch.deadline.end,
        )
        evidence = self.evidence(watch, spec, run.phase, run.message, run.metrics)
        for line in evidence.lines():
            log(f"shadow {line}")
        return evidence.verdict(spec), evidence

    def follow(self, watch: Watch) -> Verdict:
        reason, evidence = self.judge(watch)
        tags = shadow_tags(evidence, reason)
        watch.record(tags)
        if reason is not None:
            return Verdict(False, f"shadow stage: {reason}", evidence, tags=tags)
        passed = f"shadow stage passed: {count(evidence.candidate_requests)} paired predictions"
        self.cluster.log(passed)
        revision = self.cluster.upgrade(self.overrides("", ""))
        self.cluster.log(f"shadow removed (Helm revision {revision}): the stable pods mirror nothing")
        if self.live is None:
            return Verdict(False, passed, evidence, tags=tags, shadow_only=True)
        self.cluster.log(f"going on with {self.live.mode}")
        self.live_started = True
        self.live.deploy_candidate(watch.image, watch.version)
        live = self.live.follow(watch)
        return Verdict(live.completed, live.reason, live.evidence, live.left_paused, tags=tags)

    # --- operations ------------------------------------------------------------------------------------
    def promote(self, *, full: bool) -> str:
        if self.shadow_tag(self.cluster.installed_values()) or self.live is None:
            raise ReleaseError(
                "a shadow is never promoted: it reaches users only through the live stage after it passes"
            )
        return self.live.promote(full=full)

    def settle(self) -> None:
        if self.live is not None and self.live_started:
            self.live.settle()

    def abort(self) -> str:
        if self.shadow_tag(self.cluster.installed_values()):
            revision = self.cluster.upgrade(self.overrides("", ""))
            return f"shadow removed: the stable pods mirror nothing (Helm revision {revision})"
        if self.live is None:
            raise ReleaseError("there is no shadow to abort")
        return self.live.abort()

    def retry(self) -> str:
        if self.live is None:
            revision = self.cluster.upgrade({})
            return f"upgraded {self.cluster.release} again with its values (Helm revision {revision})"
        return self.live.retry()

    def undo(self, to_revision: int | None) -> str:
        self.cluster.helm.rollback(self.cluster.release, to_revision)
        return f"helm rollback {self.cluster.release} {to_revision or '(previous revision)'} done"

    def roll_back(self, revision: int, deadline: Deadline) -> None:
        """Back to the revision before the shadow: the shadow track and its mirroring go with it."""
        if self.live is not None and self.live_started:
            self.live.roll_back(revision, deadline)
            return
        self.cluster.helm.rollback(self.cluster.release, revision)
        self.cluster.log(f"helm rollback {self.cluster.release} {revision}: the shadow is gone")

    def status(self) -> list[str]:
        values = self.cluster.installed_values()
        tag = self.shadow_tag(values)
        lines = self.live.status() if self.live is not None else []
        if not tag:
            return [*lines, "  no shadow track"]
        name = self.deployment_name(values)
        rate = float(chart.dig(values, "rollout.shadow.sampleRate", 0.0))
        version = str(chart.dig(values, "rollout.shadow.modelVersion") or "") or chart.version_of_tag(tag)
        return [
            *lines,
            (
                f"  shadow v{version} ({tag}): answers {rate:.0%} of the stable pods' prediction requests, "
                "copied after they were answered; nobody sees its answers"
            ),
            f"  Deployment {name}: {deployment_summary(self.cluster.kube.deployment(name))}",
        ]


def shadow_tags(evidence: Evidence, reason: str | None) -> dict[str, str]:
    """The shadow stage's judgement and figures as version tags."""
    tags = {
        SHADOW_RESULT: "passed" if reason is None else f"failed: {reason}"[:5000],
        f"{TAG_PREFIX}pairs": count(evidence.candidate_requests),
    }
    for record in evidence.metrics:
        tags[f"{TAG_PREFIX}{record.name}"] = ",".join(record.values[-VALUES_KEPT:]) or "none"
    return tags
