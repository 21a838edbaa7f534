"""An in-process stand-in for the Argo Rollouts controller (v1.8.3), reconciling the Rollouts and
AnalysisRuns stored in the fake API server (:class:`tests.unit.release.fake_kube.FakeKube`).

It follows the controller's source, file by file (``git -C /work/.mirror/argoproj+argo-rollouts/repo
show v1.8.3:<path>``); each rule names where it comes from:

- ``rollout/canary.go``: steps advance one per reconcile; ``reconcileCanaryPause`` adds the
  ``CanaryPauseStep`` condition (with ``startTime``, setting ``controllerPause``) only when the
  controller has not paused yet; ``syncRolloutStatusCanary`` resets the status on a new pod template
  (back to step 0, or straight to the end when the template is the stable one), honours
  ``promoteFull``, sends an aborted rollout back to step 0.
- ``rollout/pause.go``: ``CompletedCanaryPauseStep`` (a cleared condition after a controller pause
  completes the step, timed or not; a timed step otherwise completes only after ``startTime +
  duration``), ``CompletedBlueGreenPause`` (autoPromotionEnabled / autoPromotionSeconds).
- ``rollout/bluegreen.go``: the preview is paused only after the pre-promotion analysis succeeded;
  the active selector moves to the new ReplicaSet once the analysis and the pause completed.
- ``rollout/analysis.go``: the background run starts at ``analysis.startingStep``; a failed or
  erroneous run aborts the rollout, an inconclusive one pauses it (``InconclusiveAnalysis``); runs no
  longer current (e.g. after full promotion) are cancelled with ``spec.terminate: true``.
- ``rollout/sync.go``: ``shouldFullPromote`` / ``promoteStable``.
- ``analysis/analysis.go``: measurement scheduling (``initialDelay``, ``interval``, ``count``, errors
  retried after 10 s), ``assessMetricStatus`` (``failureLimit`` default 0, ``consecutiveErrorLimit``
  default 4 from ``utils/defaults/defaults.go``), ``assessRunStatus`` (worst metric wins; a terminated
  run with no measurement is Successful).
- ``utils/analysis/helpers.go``: ``IsTerminating``; ``metricproviders/prometheus/prometheus.go``:
  a vector's values as ``[v1,v2]``; ``utils/evaluate/evaluate.go``: Successful / Failed by the
  success condition, an evaluation error (``result[0]`` of an empty vector) is an Error.

Time comes from a clock of :mod:`tests.fakes.clock`: scaled (minutes pass in seconds) or manual.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import operator
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from tests.fakes.clock import AnyClock
from tests.unit.release.fake_kube import FakeKube

API = "/apis/argoproj.io/v1alpha1/namespaces"
HASH_LABEL = "rollouts-pod-template-hash"
TYPE_LABEL = "rollout-type"
ERROR_RETRY_SECONDS = 10.0  # analysis/analysis.go DefaultErrorRetryInterval
DEFAULT_CONSECUTIVE_ERROR_LIMIT = 4  # utils/defaults/defaults.go
COMPLETED = {"Successful", "Failed", "Error", "Inconclusive"}
# utils/analysis/helpers.go analysisStatusOrder, best to worst.
ORDER = ["Successful", "Running", "Pending", "Inconclusive", "Error", "Failed"]
COMPARISON = re.compile(r"^\s*(len\(result\)|result\[(\d+)\])\s*(>=|<=|==|!=|>|<)\s*([-+0-9.eE]+)\s*$")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}
DURATION = re.compile(r"(\d+)(ms|s|m|h)")
UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: Any) -> float:
    if isinstance(text, int | float) or str(text).isdigit():
        return float(text)
    return sum(int(amount) * UNIT[unit] for amount, unit in DURATION.findall(str(text)))


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def pod_template_hash(template: dict[str, Any]) -> str:
    """A stable hash of the pod template (Argo uses FNV over the template; any stable hash will do)."""
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


class EvaluationError(Exception):
    """What utils/evaluate/evaluate.go returns for a condition that cannot be evaluated."""


def evaluate(condition: str, result: list[float]) -> bool:
    """The subset of expr conditions the chart writes: comparisons of ``result[i]`` / ``len(result)``
    joined by ``&&`` or ``||``; indexing past the vector raises, as expr does."""
    if "||" in condition:
        return any(evaluate(part, result) for part in condition.split("||"))
    if "&&" in condition:
        return all(evaluate(part, result) for part in condition.split("&&"))
    match = COMPARISON.match(condition)
    if match is None:
        raise EvaluationError(f"unsupported condition {condition!r}")
    if match.group(1) == "len(result)":
        left = float(len(result))
    else:
        index = int(match.group(2))
        if index >= len(result):
            raise EvaluationError(f"reflect: slice index out of range ({index} of {len(result)})")
        left = result[index]
    return OPERATORS[match.group(3)](left, float(match.group(4)))


@dataclass
class PauseRecord:
    """One pause of a Rollout, on the fake clock: when its condition started and how it ended."""

    step: int | None
    reason: str
    started: float
    duration: float | None
    ended: float | None = None
    ended_by: str = ""


@dataclass
class FakeArgo:
    """The controller: call :meth:`reconcile` or :meth:`start` a thread that does every ``tick`` seconds."""

    kube: FakeKube
    clock: AnyClock
    namespace: str = "tabula"
    tick: float = 0.02
    on_replica_set: Callable[[str, str], None] | None = None  # (pod hash, image): a new ReplicaSet's pods run
    pauses: list[PauseRecord] = field(default_factory=list)
    queries: list[str] = field(default_factory=list)
    abort_messages: dict[str, str] = field(default_factory=dict)  # the controller keeps them in conditions
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    # --- driving ---------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            self.reconcile()

    def reconcile(self) -> None:
        with self.kube.lock:
            for path in self._paths("rollouts"):
                self.reconcile_rollout(path)
            for path in self._paths("analysisruns"):
                self.reconcile_run(self.kube.objects[path])

    def _paths(self, plural: str) -> list[str]:
        prefix = f"{API}/{self.namespace}/{plural}/"
        return sorted(path for path in self.kube.objects if path.startswith(prefix) and path.count("/") == 7)

    # --- ReplicaSets and pods ----------------------------------------------------------------------
    def ensure_replica_set(self, rollout: dict[str, Any], pod_hash: str) -> None:
        name = f"{rollout['metadata']['name']}-{pod_hash}"
        path = f"/apis/apps/v1/namespaces/{self.namespace}/replicasets/{name}"
        if path in self.kube.objects:
            return
        revision = (
            int(rollout["metadata"].setdefault("annotations", {}).get("rollout.argoproj.io/revision", 0)) + 1
        )
        rollout["metadata"]["annotations"]["rollout.argoproj.io/revision"] = str(revision)
        template = copy.deepcopy(rollout["spec"]["template"])
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        labels = template["metadata"]["labels"]
        self.kube.put(
            path,
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": name,
                    "labels": labels,
                    "annotations": {"rollout.argoproj.io/revision": str(revision)},
                    "ownerReferences": [
                        {
                            "kind": "Rollout",
                            "name": rollout["metadata"]["name"],
                            "uid": rollout["metadata"]["uid"],
                        }
                    ],
                    "creationTimestamp": self.clock.iso(),
                },
                "spec": {"replicas": 1, "template": template},
                "status": {"replicas": 1, "availableReplicas": 1, "readyReplicas": 1},
            },
        )
        pod = f"{name}-0"
        self.kube.put(
            f"/api/v1/namespaces/{self.namespace}/pods/{pod}",
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "labels": labels, "creationTimestamp": self.clock.iso()},
                "spec": template.get("spec", {}),
                "status": {
                    "phase": "Running",
                    "conditions": [
                        {"type": "Ready", "status": "True", "lastTransitionTime": self.clock.iso()}
                    ],
                },
            },
        )
        if self.on_replica_set is not None:
            self.on_replica_set(pod_hash, str(template["spec"]["containers"][0]["image"]))

    # --- Rollouts ---------------------------------------------------------------------------------
    def reconcile_rollout(self, path: str) -> None:
        rollout = self.kube.objects[path]
        spec = rollout["spec"]
        status = rollout.setdefault("status", {})
        pod_hash = pod_template_hash(spec["template"])
        self.ensure_replica_set(rollout, pod_hash)
        if "canary" in spec["strategy"]:
            self.reconcile_canary(rollout, pod_hash)
        else:
            self.reconcile_blue_green(rollout, pod_hash)
        status["observedGeneration"] = str(rollout["metadata"].get("generation", 1))
        status["phase"], status["message"] = self.phase(rollout)
        if not status["message"]:
            status.pop("message")

    def phase(self, rollout: dict[str, Any]) -> tuple[str, str]:
        """utils/rollout/rolloututil.go: aborted -> Degraded, paused -> Paused, done -> Healthy."""
        status = rollout["status"]
        if status.get("abort"):
            revision = rollout["metadata"]["annotations"]["rollout.argoproj.io/revision"]
            message = self.abort_messages.get(rollout["metadata"]["uid"], "")
            detail = f": {message}" if message else ""
            return "Degraded", f"RolloutAborted: Rollout aborted update to revision {revision}{detail}"
        if rollout["spec"].get("paused") or status.get("pauseConditions"):
            reasons = [condition["reason"] for condition in status.get("pauseConditions") or []]
            return "Paused", ", ".join(reasons) or "manually paused"
        if status.get("currentPodHash") == status.get("stableRS"):
            return "Healthy", ""
        return "Progressing", "more replicas need to be updated"

    def reset(self, rollout: dict[str, Any], pod_hash: str, steps: int) -> None:
        """rollout/sync.go resetRolloutStatus, on a new pod template."""
        status = rollout["status"]
        for key in ("pauseConditions", "abort", "abortedAt", "promoteFull", "controllerPause"):
            status.pop(key, None)
        status.setdefault("canary", {}).pop("currentBackgroundAnalysisRunStatus", None)
        status.setdefault("blueGreen", {}).pop("prePromotionAnalysisRunStatus", None)
        status["currentPodHash"] = pod_hash
        status["currentStepIndex"] = 0
        if status.get("stableRS") == pod_hash and steps:
            status["currentStepIndex"] = steps  # canary.go: back to the stable ReplicaSet skips the steps

    def add_pause(
        self, rollout: dict[str, Any], reason: str, step: int | None, seconds: float | None
    ) -> None:
        """rollout/pause.go CalculatePauseStatus: a new condition has a startTime and sets controllerPause."""
        status = rollout["status"]
        conditions = status.setdefault("pauseConditions", [])
        if any(condition["reason"] == reason for condition in conditions):
            return
        now = self.clock.iso()
        conditions.append({"reason": reason, "startTime": now})
        status["controllerPause"] = True
        self.pauses.append(PauseRecord(step, reason, parse_time(now), seconds))

    def remove_pause(self, rollout: dict[str, Any], reason: str, ended_by: str) -> None:
        status = rollout["status"]
        status["pauseConditions"] = [c for c in status.get("pauseConditions") or [] if c["reason"] != reason]
        self.end_pauses(reason, ended_by)
        if not status["pauseConditions"]:
            # CalculatePauseStatus: with no condition left, controllerPause is not carried over.
            status.pop("pauseConditions")
            status.pop("controllerPause", None)

    def end_pauses(self, reason: str, ended_by: str) -> None:
        for record in self.pauses:
            if record.reason == reason and record.ended is None:
                record.ended, record.ended_by = self.clock.now(), ended_by

    def abort(self, rollout: dict[str, Any], message: str) -> None:
        status = rollout["status"]
        if not status.get("abort"):
            status["abort"], status["abortedAt"] = True, self.clock.iso()
            self.abort_messages[rollout["metadata"]["uid"]] = message

    def promote_stable(self, rollout: dict[str, Any], steps: int | None) -> None:
        """rollout/sync.go promoteStable."""
        status = rollout["status"]
        status.pop("pauseConditions", None)
        status.pop("controllerPause", None)
        status.pop("abort", None)
        status.pop("abortedAt", None)
        status.pop("promoteFull", None)
        self.end_pauses("CanaryPauseStep", "promotion")
        self.end_pauses("BlueGreenPause", "promotion")
        if steps is not None:
            status["currentStepIndex"] = steps
        status["stableRS"] = status["currentPodHash"]

    def reconcile_canary(self, rollout: dict[str, Any], pod_hash: str) -> None:
        spec, status = rollout["spec"], rollout["status"]
        canary = spec["strategy"]["canary"]
        steps = canary.get("steps", [])
        if not status.get("stableRS"):
            status.update(currentPodHash=pod_hash, stableRS=pod_hash, currentStepIndex=len(steps))
            return  # rollout/sync.go shouldFullPromote: "Initial deploy"
        if status.get("currentPodHash") != pod_hash:
            self.reset(rollout, pod_hash, len(steps))
            return  # canary.go rolloutCanary: a changed template only resets the status
        if status.get("abort") is False:
            status.pop("abort")  # cmd/retry/retry.go patched abort: false; abortedAt stays for one reconcile
        self.reconcile_background_analysis(rollout)
        if not status.get("abort"):
            status.pop("abortedAt", None)  # pause.go CalculatePauseStatus
        index = int(status.get("currentStepIndex") or 0)
        if status.get("promoteFull"):
            # syncRolloutStatusCanary: promoteFull clears pauses and the abort, and skips every step.
            for reason in {c["reason"] for c in status.get("pauseConditions") or []}:
                self.remove_pause(rollout, reason, "promoteFull")
            status.pop("abort", None)
            index = len(steps)
        if not status.get("abort") and (status.get("promoteFull") or index >= len(steps)):
            self.promote_stable(rollout, len(steps))
            return
        if status.get("abort"):
            status["currentStepIndex"] = len(steps) if status["stableRS"] == pod_hash else 0
            return
        if any(c["reason"] == "InconclusiveAnalysis" for c in status.get("pauseConditions") or []):
            return
        if spec.get("paused"):
            return  # completedCurrentCanaryStep: a paused spec completes nothing
        step = steps[index]
        if "pause" in step:
            self.reconcile_canary_pause(rollout, index, step["pause"] or {})
        else:
            status["currentStepIndex"] = index + 1  # setWeight: the fake's replicas are ready at once

    def reconcile_canary_pause(self, rollout: dict[str, Any], index: int, pause: dict[str, Any]) -> None:
        status = rollout["status"]
        condition = next(
            (c for c in status.get("pauseConditions") or [] if c["reason"] == "CanaryPauseStep"), None
        )
        seconds = duration(pause["duration"]) if pause.get("duration") not in (None, "") else None
        # pause.go CompletedCanaryPauseStep
        if status.get("controllerPause") and condition is None:
            self.end_pauses("CanaryPauseStep", "promote")
            status.pop("controllerPause", None)
            status["currentStepIndex"] = index + 1
            return
        expired = condition is not None and self.clock.now() > parse_time(condition["startTime"]) + (
            seconds or 0
        )
        if seconds is not None and expired:
            self.remove_pause(rollout, "CanaryPauseStep", "duration")
            status["currentStepIndex"] = index + 1
            return
        # canary.go reconcileCanaryPause: pause only if the controller has not paused yet.
        if condition is None and not status.get("controllerPause"):
            self.add_pause(rollout, "CanaryPauseStep", index, seconds)

    def runs_of(self, rollout: dict[str, Any], pod_hash: str, kind: str) -> list[dict[str, Any]]:
        return [
            self.kube.objects[path]
            for path in self._paths("analysisruns")
            if self.kube.objects[path]["metadata"]["labels"].get(HASH_LABEL) == pod_hash
            and self.kube.objects[path]["metadata"]["labels"].get(TYPE_LABEL) == kind
            and self.kube.objects[path]["metadata"]["ownerReferences"][0]["uid"] == rollout["metadata"]["uid"]
        ]

    def cancel_other_runs(self, rollout: dict[str, Any], keep: dict[str, Any] | None) -> None:
        """rollout/analysis.go cancelAnalysisRuns: ``spec.terminate: true`` on runs no longer current."""
        uid = rollout["metadata"]["uid"]
        for path in self._paths("analysisruns"):
            run = self.kube.objects[path]
            if run is keep or run["metadata"]["ownerReferences"][0]["uid"] != uid:
                continue
            if run.get("status", {}).get("phase") not in COMPLETED:
                run["spec"]["terminate"] = True

    def reconcile_background_analysis(self, rollout: dict[str, Any]) -> None:
        """rollout/analysis.go reconcileBackgroundAnalysisRun."""
        spec, status = rollout["spec"], rollout["status"]
        analysis = spec["strategy"]["canary"].get("analysis")
        pod_hash = status["currentPodHash"]
        index = int(status.get("currentStepIndex") or 0)
        fully_promoted = pod_hash == status.get("stableRS")
        before_start = analysis is not None and index < int(analysis.get("startingStep", 0))
        if (
            analysis is None
            or status.get("abort")
            or status.get("promoteFull")
            or fully_promoted
            or before_start
        ):
            status.get("canary", {}).pop("currentBackgroundAnalysisRunStatus", None)
            self.cancel_other_runs(rollout, None)
            return
        runs = self.runs_of(rollout, pod_hash, "Background")
        # analysis.go needsNewAnalysisRun: none yet, or the rollout was aborted before (a retry).
        retried = bool(status.get("abortedAt")) and not status.get("abort")
        run = runs[-1] if runs and not retried else self.create_run(rollout, analysis, "Background", "")
        self.cancel_other_runs(rollout, run)
        phase = run.get("status", {}).get("phase", "Pending")
        status.setdefault("canary", {})["currentBackgroundAnalysisRunStatus"] = {
            "name": run["metadata"]["name"],
            "status": phase,
            "message": run.get("status", {}).get("message", ""),
        }
        if phase == "Inconclusive":
            self.add_pause(rollout, "InconclusiveAnalysis", None, None)
        elif phase in {"Error", "Failed"}:
            self.abort(rollout, run["status"].get("message", ""))

    def create_run(
        self, rollout: dict[str, Any], analysis: dict[str, Any], kind: str, infix: str
    ) -> dict[str, Any]:
        """rollout/analysis.go newAnalysisRunFromRollout: name ``<rollout>-<hash>-<revision>[-infix]``."""
        status = rollout["status"]
        metrics: list[dict[str, Any]] = []
        for ref in analysis.get("templates", []):
            path = f"{API}/{self.namespace}/analysistemplates/{ref['templateName']}"
            metrics += copy.deepcopy(self.kube.objects[path]["spec"]["metrics"])
        args = []
        for arg in analysis.get("args", []):
            source = arg.get("valueFrom", {}).get("podTemplateHashValue")
            value = (
                arg.get("value")
                if source is None
                else (status["currentPodHash"] if source == "Latest" else status["stableRS"])
            )
            args.append({"name": arg["name"], "value": str(value)})
        revision = rollout["metadata"]["annotations"]["rollout.argoproj.io/revision"]
        name = "-".join(
            part for part in (rollout["metadata"]["name"], status["currentPodHash"], revision, infix) if part
        )
        taken = {path.rsplit("/", 1)[-1] for path in self._paths("analysisruns")}
        base, collisions = name, 0
        while name in taken:  # utils/analysis/factory.go CreateWithCollisionCounter
            collisions += 1
            name = f"{base}.{collisions}"
        labels = {HASH_LABEL: status["currentPodHash"], TYPE_LABEL: kind}
        return self.kube.put(
            f"{API}/{self.namespace}/analysisruns/{name}",
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "AnalysisRun",
                "metadata": {
                    "name": name,
                    "namespace": self.namespace,
                    "labels": labels | rollout["spec"]["selector"]["matchLabels"],
                    "ownerReferences": [
                        {
                            "kind": "Rollout",
                            "name": rollout["metadata"]["name"],
                            "uid": rollout["metadata"]["uid"],
                        }
                    ],
                    "creationTimestamp": self.clock.iso(),
                },
                "spec": {"metrics": metrics, "args": args},
                "status": {"phase": "Pending"},
            },
        )

    def reconcile_blue_green(self, rollout: dict[str, Any], pod_hash: str) -> None:
        spec, status = rollout["spec"], rollout["status"]
        blue_green = spec["strategy"]["blueGreen"]
        blue = status.setdefault("blueGreen", {})
        if not blue.get("activeSelector"):
            # sync.go shouldFullPromote "Initial deploy": the first ReplicaSet is active at once.
            status.update(currentPodHash=pod_hash, stableRS=pod_hash)
            blue.update(activeSelector=pod_hash, previewSelector=pod_hash)
            return
        if status.get("currentPodHash") != pod_hash:
            self.reset(rollout, pod_hash, 0)
            status.pop("currentStepIndex", None)
            blue["previewSelector"] = pod_hash
            return
        if status.get("abort") is False:
            status.pop("abort")  # cmd/retry/retry.go
        if status.get("promoteFull"):
            for reason in {c["reason"] for c in status.get("pauseConditions") or []}:
                self.remove_pause(rollout, reason, "promoteFull")
            status.pop("abort", None)
        if blue["activeSelector"] == pod_hash:
            if not status.get("abort") and status.get("stableRS") != pod_hash:
                self.promote_stable(rollout, None)  # sync.go: "Completed blue-green update"
            self.cancel_other_runs(rollout, None)
            return
        if status.get("abort"):
            self.cancel_other_runs(rollout, None)
            return
        analysis_done = self.reconcile_pre_promotion(rollout, pod_hash)
        if not status.get("abort"):
            status.pop("abortedAt", None)
        if status.get("promoteFull"):
            blue["activeSelector"] = pod_hash
            return
        if status.get("abort") or not analysis_done or spec.get("paused"):
            return
        # bluegreen.go reconcileBlueGreenPause + pause.go CompletedBlueGreenPause
        auto = blue_green.get("autoPromotionEnabled", True)
        seconds = float(blue_green.get("autoPromotionSeconds", 0) or 0)
        needs_pause = not auto or seconds > 0
        if needs_pause:
            condition = next(
                (c for c in status.get("pauseConditions") or [] if c["reason"] == "BlueGreenPause"), None
            )
            if condition is None and not status.get("controllerPause"):
                self.add_pause(rollout, "BlueGreenPause", None, seconds if auto else None)
                return
            if condition is not None:
                if not auto or self.clock.now() <= parse_time(condition["startTime"]) + seconds:
                    return
                self.remove_pause(rollout, "BlueGreenPause", "autoPromotionSeconds")
            else:
                self.end_pauses("BlueGreenPause", "promote")
        blue["activeSelector"] = pod_hash  # reconcileActiveService: switch to the preview

    def reconcile_pre_promotion(self, rollout: dict[str, Any], pod_hash: str) -> bool:
        """rollout/analysis.go reconcilePrePromotionAnalysisRun + pause.go completedPrePromotionAnalysis."""
        analysis = rollout["spec"]["strategy"]["blueGreen"].get("prePromotionAnalysis")
        status = rollout["status"]
        if analysis is None:
            return True
        if status.get("promoteFull"):
            self.cancel_other_runs(rollout, None)
            return True
        runs = self.runs_of(rollout, pod_hash, "PrePromotion")
        retried = bool(status.get("abortedAt")) and not status.get("abort")
        run = runs[-1] if runs and not retried else self.create_run(rollout, analysis, "PrePromotion", "pre")
        self.cancel_other_runs(rollout, run)
        phase = run.get("status", {}).get("phase", "Pending")
        status["blueGreen"]["prePromotionAnalysisRunStatus"] = {
            "name": run["metadata"]["name"],
            "status": phase,
            "message": run.get("status", {}).get("message", ""),
        }
        if phase == "Inconclusive":
            self.add_pause(rollout, "InconclusiveAnalysis", None, None)
        elif phase in {"Error", "Failed"}:
            self.abort(rollout, run["status"].get("message", ""))
        return bool(phase == "Successful")

    # --- AnalysisRuns -----------------------------------------------------------------------------
    def reconcile_run(self, run: dict[str, Any]) -> None:
        """analysis/analysis.go reconcileAnalysisRun: generateMetricTasks, runMeasurements, assessRun."""
        status = run.setdefault("status", {})
        if status.get("phase") in COMPLETED:
            return
        results = status.setdefault("metricResults", [])
        args = {arg["name"]: arg["value"] for arg in run["spec"].get("args", [])}
        terminating = self.terminating(run)
        now = self.clock.now()
        for metric in run["spec"]["metrics"]:
            result = next((r for r in results if r["name"] == metric["name"]), None)
            if result is not None and result["phase"] in COMPLETED:
                continue
            if terminating:
                continue  # generateMetricTasks: "Skipping measurement: run is terminating"
            last = result["measurements"][-1] if result and result["measurements"] else None
            if last is None:
                if metric.get("initialDelay"):
                    if "startedAt" not in status:
                        continue
                    if parse_time(status["startedAt"]) + duration(metric["initialDelay"]) > now:
                        continue
            else:
                count = self.effective_count(metric)
                if count is not None and result is not None and result["count"] >= count:
                    continue
                interval = (
                    ERROR_RETRY_SECONDS
                    if last["phase"] == "Error" or not metric.get("interval")
                    else duration(metric["interval"])
                )
                if not now > parse_time(last["finishedAt"]) + interval:
                    continue
            if result is None:
                result = {
                    "name": metric["name"],
                    "phase": "Running",
                    "count": 0,
                    "successful": 0,
                    "failed": 0,
                    "inconclusive": 0,
                    "error": 0,
                    "consecutiveError": 0,
                    "measurements": [],
                }
                results.append(result)
            self.measure(metric, result, args)
        self.assess(run)

    def terminating(self, run: dict[str, Any]) -> bool:
        """utils/analysis/helpers.go IsTerminating."""
        if run["spec"].get("terminate"):
            return True
        return any(
            r["phase"] in {"Failed", "Error", "Inconclusive"} for r in run["status"].get("metricResults", [])
        )

    @staticmethod
    def effective_count(metric: dict[str, Any]) -> int | None:
        """analysis_types.go EffectiveCount: no count and no interval -> 1; no count -> unlimited."""
        count = int(metric.get("count", 0) or 0)
        if count == 0:
            return None if metric.get("interval") else 1
        return count

    def measure(self, metric: dict[str, Any], result: dict[str, Any], args: dict[str, str]) -> None:
        """metricproviders/prometheus/prometheus.go Run + utils/evaluate/evaluate.go EvaluateResult."""
        started = self.clock.iso()
        prometheus = metric["provider"]["prometheus"]
        query = prometheus["query"]
        for name, value in args.items():
            query = query.replace(f"{{{{args.{name}}}}}", value)
        measurement: dict[str, Any] = {"startedAt": started}
        try:
            self.queries.append(query)
            body = httpx.get(
                f"{prometheus['address'].rstrip('/')}/api/v1/query", params={"query": query}, timeout=10
            ).json()
            if body.get("status") != "success":
                raise EvaluationError(str(body.get("error")))
            values = [float(sample["value"][1]) for sample in body["data"]["result"]]
            measurement["value"] = "[" + ",".join(format_value(v) for v in values) + "]"
            measurement["phase"] = self.assess_measurement(metric, values)
        except (EvaluationError, httpx.HTTPError, ValueError) as exc:
            measurement["phase"], measurement["message"] = "Error", str(exc)
        measurement["finishedAt"] = self.clock.iso()
        phase = measurement["phase"]
        # analysis.go runMeasurements: the counters of each completed measurement.
        if phase == "Error":
            result["error"] += 1
            result["consecutiveError"] += 1
        else:
            result["count"] += 1
            result["consecutiveError"] = 0
            result[
                {"Successful": "successful", "Failed": "failed", "Inconclusive": "inconclusive"}[phase]
            ] += 1
        result["measurements"].append(measurement)

    @staticmethod
    def assess_measurement(metric: dict[str, Any], values: list[float]) -> str:
        """evaluate.go: failure = not success when only a successCondition is set; neither -> Inconclusive."""
        success = metric.get("successCondition", "")
        failure = metric.get("failureCondition", "")
        if not success and not failure:
            return "Successful"
        succeeded = evaluate(success, values) if success else False
        failed = evaluate(failure, values) if failure else False
        if success and not failure:
            failed = not succeeded
        elif failure and not success:
            succeeded = not failed
        if failed:
            return "Failed"
        return "Successful" if succeeded else "Inconclusive"

    def assess(self, run: dict[str, Any]) -> None:
        """analysis.go assessRunStatus + assessMetricStatus."""
        status = run["status"]
        terminating = self.terminating(run)
        if "startedAt" not in status:
            status["startedAt"] = self.clock.iso()
        worst, message, everything_completed = "", "", True
        for metric in run["spec"]["metrics"]:
            result = next((r for r in status["metricResults"] if r["name"] == metric["name"]), None)
            if result is None:
                if terminating:
                    continue  # never measured: not an incomplete metric of a terminating run
                everything_completed = False
                continue
            phase, why = self.metric_status(metric, result, terminating)
            result["phase"] = phase
            if phase not in COMPLETED:
                everything_completed = False
                continue
            if not worst or ORDER.index(phase) > ORDER.index(worst):
                worst = phase
                if why:
                    message = f'Metric "{metric["name"]}" assessed {phase} due to {why}'
        if terminating:
            # "we have yet to take a single measurement, but have already been instructed to stop"
            status["phase"] = worst or "Successful"
        elif everything_completed and worst:
            status["phase"] = worst
        else:
            status["phase"] = "Running"
        if message:
            status["message"] = message
        elif run["spec"].get("terminate"):
            status["message"] = "Run Terminated"
        if status["phase"] in COMPLETED:
            status["completedAt"] = self.clock.iso()

    def metric_status(
        self, metric: dict[str, Any], result: dict[str, Any], terminating: bool
    ) -> tuple[str, str]:
        if result["phase"] in COMPLETED:
            return result["phase"], ""
        measurements = result["measurements"]
        if not measurements:
            return ("Successful" if terminating else "Pending"), ""
        failure_limit = int(metric.get("failureLimit", 0))
        inconclusive_limit = int(metric.get("inconclusiveLimit", 0))
        error_limit = int(metric.get("consecutiveErrorLimit", DEFAULT_CONSECUTIVE_ERROR_LIMIT))
        phase, why = "", ""
        if failure_limit >= 0 and result["failed"] > failure_limit:
            phase, why = "Failed", f"failed ({result['failed']}) > failureLimit ({failure_limit})"
        if result["inconclusive"] > inconclusive_limit:
            phase = "Inconclusive"
            why = f"inconclusive ({result['inconclusive']}) > inconclusiveLimit ({inconclusive_limit})"
        if result["consecutiveError"] > error_limit:
            phase = "Error"
            why = f"consecutiveErrors ({result['consecutiveError']}) > consecutiveErrorLimit ({error_limit})"
        if phase:
            return phase, why
        count = self.effective_count(metric)
        if count is not None and result["count"] >= count:
            return "Successful", ""
        return ("Successful" if terminating else "Running"), ""


def format_value(value: float) -> str:
    """Prometheus model.SampleValue.String(): NaN as ``NaN``, integers without a point."""
    if math.isnan(value):
        return "NaN"
    return f"{value:g}" if value != int(value) or abs(value) >= 1e21 else str(int(value))
