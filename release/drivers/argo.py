"""Argo Rollouts canary and blue/green: the controller runs the steps and the AnalysisRun; the loop watches.

The loop never shortens the controller's timing: a timed pause (``pause: {duration}``, or blue/green
``autoPromotionSeconds``) is left to the controller, which completes it when its duration has passed
(``rollout/pause.go``). A manual pause is promoted, the way ``kubectl argo rollouts promote`` does it,
only when the evidence rule holds for what the analysis measured so far.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from release import chart
from release.cluster import Cluster
from release.drivers import Verdict, Watch
from release.errors import ReleaseError
from release.evidence import Evidence, MetricRecord, timestamp
from release.kube import Deadline, pod_problem, ready_since
from release.rollouts import POD_HASH_LABEL, Rollouts, describe_rollout, describe_step, image_of

ROLLOUT_TYPE_LABEL = "rollout-type"  # utils/analysis/factory.go: Background / PrePromotion


def generation_seen(rollout: dict[str, Any]) -> bool:
    status = rollout.get("status", {})
    return str(status.get("observedGeneration")) == str(rollout["metadata"].get("generation"))


def shown_values(measurements: list[dict[str, Any]]) -> tuple[str, ...]:
    return tuple(
        str(measurement["value"]).strip("[]")
        for measurement in measurements
        if measurement.get("value") not in (None, "")
    )


def metric_records(run: dict[str, Any] | None) -> tuple[MetricRecord, ...]:
    results = (run or {}).get("status", {}).get("metricResults", [])
    return tuple(
        MetricRecord(
            name=str(result["name"]),
            phase=str(result.get("phase", "Pending")),
            successful=int(result.get("successful", 0)),
            failed=int(result.get("failed", 0)),
            inconclusive=int(result.get("inconclusive", 0)),
            errors=int(result.get("error", 0)),
            values=shown_values(result.get("measurements", [])),
            failed_values=shown_values(
                [m for m in result.get("measurements", []) if m.get("phase") == "Failed"]
            ),
        )
        for result in results
    )


class ArgoDriver(ABC):
    """What Argo canary and blue/green share; subclasses say which pauses are manual and when it is done."""

    mode = "argo"
    run_type = ""

    def __init__(self, cluster: Cluster, values: dict[str, Any] | None) -> None:
        self.cluster = cluster
        self.values = values or {}
        self.rollouts = Rollouts(cluster.kube)
        self.strategy = self.mode.split("/")[0]

    @property
    def name(self) -> str:
        return chart.fullname(self.values, self.cluster.release)

    # --- what the subclasses decide ------------------------------------------------------------
    pause_reason: str  # the pause condition the strategy's own pause adds

    def pause_kind(self, rollout: dict[str, Any]) -> str | None:
        """``timed``, ``manual``, ``user`` (spec.paused), ``inconclusive``, or None when not paused."""
        spec, status = rollout.get("spec", {}), rollout.get("status", {})
        reasons = {condition.get("reason") for condition in status.get("pauseConditions") or []}
        if "InconclusiveAnalysis" in reasons:
            return "inconclusive"
        if spec.get("paused"):
            return "user"
        if self.pause_reason not in reasons:
            return None
        return self.strategy_pause_kind(spec, status)

    @abstractmethod
    def strategy_pause_kind(self, spec: dict[str, Any], status: dict[str, Any]) -> str:
        """``timed`` or ``manual``: how the strategy's own pause ends."""

    def completed(self, rollout: dict[str, Any]) -> bool:
        status = rollout.get("status", {})
        return bool(
            generation_seen(rollout)
            and status.get("phase") == "Healthy"
            and status.get("currentPodHash")
            and status.get("currentPodHash") == status.get("stableRS")
        )

    # --- deploying -------------------------------------------------------------------------------
    def overrides(self, image: str, version: str) -> dict[str, Any]:
        repository, tag = chart.split_image(image)
        return {
            "image": {"repository": repository, "tag": tag},
            "model": {"version": version},
            "rollout": {"strategy": self.strategy, "provider": "argo"},
        }

    def deploy(self, image: str, version: str, deadline: Deadline) -> str:
        self.cluster.upgrade(self.overrides(image, version))
        self.values = self.cluster.installed_values()
        return self.wait_ready(deadline)

    def deploy_candidate(self, image: str, version: str) -> int | None:
        workload = chart.workload(self.values, self.cluster.release)
        if f"{workload.image_repository}:{workload.image_tag}" == image:
            return None
        return self.cluster.upgrade(self.overrides(image, version))

    def wait_ready(self, deadline: Deadline) -> str:
        """Until the Rollout is Healthy or paused at a step; fails when it degrades or a pod cannot start."""
        while True:
            rollout = self.rollouts.get(self.name)
            status = rollout.get("status", {})
            phase = status.get("phase")
            if generation_seen(rollout) and phase == "Healthy":
                return f"Rollout {self.name} healthy ({describe_step(rollout)})"
            if generation_seen(rollout) and phase == "Paused":
                return (
                    f"Rollout {self.name} paused: {describe_step(rollout)}; `tabula rollout promote` goes on"
                )
            if generation_seen(rollout) and phase == "Degraded":
                raise ReleaseError(f"Rollout {self.name} is degraded: {status.get('message')}")
            if problem := self.pod_problem(status.get("currentPodHash")):
                raise ReleaseError(f"Rollout {self.name} cannot become ready: {problem}")
            deadline.sleep(f"Rollout {self.name} to become ready", f" (phase {phase})")

    def pod_problem(self, pod_hash: str | None) -> str | None:
        if not pod_hash:
            return None
        for pod in self.cluster.kube.pods(f"{POD_HASH_LABEL}={pod_hash}"):
            if problem := pod_problem(pod):
                return problem
        return None

    # --- following -------------------------------------------------------------------------------
    def evidence(self, watch: Watch, rollout: dict[str, Any], candidate: str, stable: str | None) -> Evidence:
        runs = [
            run
            for run in self.rollouts.analysis_runs(rollout, candidate)
            if run["metadata"].get("labels", {}).get(ROLLOUT_TYPE_LABEL) == self.run_type
        ]
        run = runs[-1] if runs else None
        run_status = (run or {}).get("status", {})
        since = ready_since(self.cluster.kube.pods(f"{POD_HASH_LABEL}={candidate}"))
        window = self.cluster.clock.now() - timestamp(since) if since else None
        candidate_requests = stable_requests = None
        if watch.spec is not None and window is not None:
            candidate_requests = watch.prometheus.requests(watch.spec, candidate, window)
            if stable:
                stable_requests = watch.prometheus.requests(watch.spec, stable, window)
        return Evidence(
            candidate_track=candidate,
            stable_track=stable,
            window=window,
            candidate_requests=candidate_requests,
            stable_requests=stable_requests,
            run_phase=str(run_status.get("phase", "Pending")) if run else "none",
            run_message=str(run_status.get("message", "")),
            metrics=metric_records(run),
        )

    def follow(self, watch: Watch) -> Verdict:
        log, last, waiting = self.cluster.log, "", ""
        candidate: str | None = None
        stable: str | None = None
        while True:
            rollout = self.rollouts.get(self.name)
            status = rollout.get("status", {})
            if image_of(rollout) != watch.image:
                raise ReleaseError(
                    f"Rollout {self.name} now runs {image_of(rollout)}, not {watch.image}: another deploy "
                    "replaced it"
                )
            if not generation_seen(rollout) or not status.get("currentPodHash"):
                watch.deadline.sleep(f"Rollout {self.name} to see the new version")
                continue
            current = str(status["currentPodHash"])
            if current != status.get("stableRS"):
                candidate, stable = current, status.get("stableRS")
            candidate = candidate or current
            progress = f"{status.get('phase', 'Progressing')}: {describe_step(rollout)}"
            if progress != last:
                log(f"Rollout {self.name} {progress}")
                last = progress
            if status.get("abort") or status.get("phase") == "Degraded":
                evidence = self.evidence(watch, rollout, candidate, stable)
                reason = evidence.verdict(watch.spec) or status.get("message") or "aborted by an operator"
                return Verdict(False, reason, evidence)
            if problem := self.pod_problem(candidate):
                return Verdict(False, problem, None)
            if self.completed(rollout):
                evidence = self.evidence(watch, rollout, candidate, stable)
                return Verdict(True, f"Rollout {self.name} completed ({describe_step(rollout)})", evidence)
            kind = self.pause_kind(rollout)
            note = ""
            if kind == "timed":
                note = f"Rollout {self.name} is in a timed pause: the controller ends it, the loop waits"
            elif kind == "user":
                note = f"Rollout {self.name} was paused by a user: `tabula rollout promote` goes on"
            elif kind in {"manual", "inconclusive"}:
                evidence = self.evidence(watch, rollout, candidate, stable)
                reason = evidence.verdict(watch.spec)
                finished = evidence.run_phase not in {"Pending", "Running"} or kind == "inconclusive"
                if reason is None and kind == "manual" and watch.auto_promote:
                    for line in evidence.lines():
                        log(line)
                    log(self.rollouts.promote(self.name, full=False))
                elif reason is None:
                    note = f"Rollout {self.name} waits for `tabula rollout promote` (or abort)"
                elif finished:
                    # Nothing more will be measured at this pause: decide now.
                    return Verdict(False, reason, evidence, left_paused=not watch.auto_promote)
                else:
                    note = f"Rollout {self.name} pause: not promoted yet, {reason}"
            if note and note != waiting:
                log(note)
                waiting = note
            watch.deadline.sleep(f"Rollout {self.name} to finish", f" ({last})")

    # --- operations ------------------------------------------------------------------------------
    def promote(self, *, full: bool) -> str:
        return self.rollouts.promote(self.name, full=full)

    def settle(self) -> None:
        """The controller scales the old ReplicaSet down itself (``scaleDownDelaySeconds``)."""
        return

    def abort(self) -> str:
        return self.rollouts.abort(self.name)

    def retry(self) -> str:
        return self.rollouts.retry(self.name)

    def undo(self, to_revision: int | None) -> str:
        # Through Helm, not by patching spec.template as `kubectl argo rollouts undo` does: Helm owns that
        # field (server-side apply), and the next upgrade would fight the patch. Argo then rolls back to
        # the earlier ReplicaSet as it does for any template change (fast if still within its window).
        self.cluster.helm.rollback(self.cluster.release, to_revision)
        return f"helm rollback {self.cluster.release} {to_revision or '(previous revision)'} done"

    def status(self) -> list[str]:
        rollout = self.rollouts.get(self.name)
        return describe_rollout(rollout, self.rollouts.analysis_runs(rollout))

    def roll_back(self, revision: int, deadline: Deadline) -> None:
        """Abort (back to the stable ReplicaSet), then Helm's earlier revision; a promoted candidate is
        replaced at once with ``promote --full``: the version rolled back to needs no analysis."""
        log = self.cluster.log
        rollout = self.rollouts.get(self.name)
        status = rollout.get("status", {})
        promoted = bool(status.get("currentPodHash")) and status.get("currentPodHash") == status.get(
            "stableRS"
        )
        if not promoted and not status.get("abort"):
            log(self.rollouts.abort(self.name))
        self.cluster.helm.rollback(self.cluster.release, revision)
        log(f"helm rollback {self.cluster.release} {revision}: the desired state is the stable version again")
        if promoted:
            while True:
                rollout = self.rollouts.get(self.name)
                status = rollout.get("status", {})
                if generation_seen(rollout) and status.get("currentPodHash"):
                    break
                deadline.sleep(f"Rollout {self.name} to see the rollback")
            if status.get("currentPodHash") != status.get("stableRS"):
                log(self.rollouts.promote(self.name, full=True))
        log(self.wait_ready(deadline))


class ArgoCanary(ArgoDriver):
    mode = "canary/argo"
    run_type = "Background"
    pause_reason = "CanaryPauseStep"

    def strategy_pause_kind(self, spec: dict[str, Any], status: dict[str, Any]) -> str:
        steps = spec["strategy"]["canary"].get("steps", [])
        index = int(status.get("currentStepIndex") or 0)
        pause = steps[index].get("pause") if index < len(steps) else None
        return "timed" if pause and pause.get("duration") not in (None, "", 0) else "manual"


class ArgoBlueGreen(ArgoDriver):
    mode = "blueGreen/argo"
    run_type = "PrePromotion"
    pause_reason = "BlueGreenPause"

    def strategy_pause_kind(self, spec: dict[str, Any], status: dict[str, Any]) -> str:
        del status  # a blue/green pause ends by its promotion settings alone
        blue_green = spec["strategy"]["blueGreen"]
        # rollout/pause.go CompletedBlueGreenPause: with autoPromotionEnabled (the default) the pause
        # ends after autoPromotionSeconds; without it, only a promotion ends it.
        return "timed" if blue_green.get("autoPromotionEnabled", True) else "manual"

    def completed(self, rollout: dict[str, Any]) -> bool:
        active = rollout.get("status", {}).get("blueGreen", {}).get("activeSelector")
        return super().completed(rollout) and active == rollout["status"]["currentPodHash"]
