"""Argo Rollouts through the CustomObjects API, patched the way ``kubectl argo rollouts`` patches them.

- promote: clear ``status.pauseConditions`` and ``spec.paused`` (or, mid-analysis, advance
  ``status.currentStepIndex``); ``--full`` sets ``status.promoteFull``.
- abort: ``status.abort = true``; retry: ``status.abort = false``.

``undo`` is not here: ``kubectl argo rollouts undo`` patches ``spec.template``, a field Helm owns (Helm 4
applies server-side), so the next ``helm upgrade`` would conflict with it or undo it. Undo goes through
``helm rollback`` (the drivers' ``undo``), so the chart stays the only writer of the Rollout's spec.
"""

from __future__ import annotations

import json
from typing import Any

from release.kube import MERGE_PATCH, Kube

GROUP = "argoproj.io"
VERSION = "v1alpha1"
POD_HASH_LABEL = "rollouts-pod-template-hash"


class Rollouts:
    """The Rollout operations of one namespace."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube

    def get(self, name: str) -> dict[str, Any]:
        return self.kube.json(
            lambda: self.kube.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.kube.namespace, "rollouts", name, _preload_content=False
            ),
            f"read Rollout {name} in namespace {self.kube.namespace}",
        )

    def _patch(self, name: str, body: Any, *, status: bool, content_type: str = MERGE_PATCH) -> None:
        custom = self.kube.custom
        patch = (
            custom.patch_namespaced_custom_object_status if status else custom.patch_namespaced_custom_object
        )
        self.kube.call(
            lambda: patch(
                GROUP,
                VERSION,
                self.kube.namespace,
                "rollouts",
                name,
                body,
                _content_type=content_type,
                _preload_content=False,
            ),
            f"patch Rollout {name}{' status' if status else ''}",
        )

    def promote(self, name: str, *, full: bool) -> str:
        rollout = self.get(name)
        spec, status = rollout.get("spec", {}), rollout.get("status", {})
        if full:
            if status.get("currentPodHash") and status.get("currentPodHash") == status.get("stableRS"):
                return f"Rollout {name} is already fully promoted"
            self._patch(name, {"status": {"promoteFull": True}}, status=True)
            return f"Rollout {name} fully promoted (remaining steps and analysis skipped)"
        # pkg/kubectl-argo-rollouts/cmd/promote/promote.go: clear the pause conditions, or, when
        # nothing is paused (mid-analysis), clear them and move to the next step; never both.
        done = []
        if status.get("pauseConditions"):
            self._patch(name, {"status": {"pauseConditions": None}}, status=True)
            done.append("cleared its pause")
        elif "canary" in spec.get("strategy", {}):
            steps = spec["strategy"]["canary"].get("steps", [])
            index = int(status.get("currentStepIndex") or 0)
            if index < len(steps):
                index += 1
            self._patch(name, {"status": {"pauseConditions": None, "currentStepIndex": index}}, status=True)
            done.append(f"moved to step {index}/{len(steps)}")
        if spec.get("paused"):
            self._patch(name, {"spec": {"paused": False}}, status=False)
            done.append("unpaused it")
        return f"Rollout {name} promoted: {', '.join(done) or 'nothing was paused'}"

    def abort(self, name: str) -> str:
        self._patch(name, {"status": {"abort": True}}, status=True)
        return f"Rollout {name} aborted: traffic goes back to the stable ReplicaSet"

    def retry(self, name: str) -> str:
        """``kubectl argo rollouts retry rollout`` (cmd/retry/retry.go): clear ``status.abort``."""
        self._patch(name, {"status": {"abort": False}}, status=True)
        return f"Rollout {name} retried: the update to the new version starts again"

    def analysis_runs(self, rollout: dict[str, Any], pod_hash: str | None = None) -> list[dict[str, Any]]:
        """The AnalysisRuns the Rollout owns (of one pod template hash), oldest first."""
        selector = f"{POD_HASH_LABEL}={pod_hash}" if pod_hash else ""
        listing = self.kube.json(
            lambda: self.kube.custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.kube.namespace,
                "analysisruns",
                label_selector=selector,
                _preload_content=False,
            ),
            f"list AnalysisRuns in namespace {self.kube.namespace}",
        )
        uid = rollout["metadata"].get("uid")
        owned = [
            run
            for run in listing.get("items", [])
            if any(owner.get("uid") == uid for owner in run["metadata"].get("ownerReferences", []))
        ]
        return sorted(owned, key=lambda run: str(run["metadata"].get("creationTimestamp", "")))


def current_analysis(rollout: dict[str, Any]) -> dict[str, Any] | None:
    """The status of the analysis run of the current step (canary background or blue/green pre-promotion)."""
    status = rollout.get("status", {})
    canary = status.get("canary", {}).get("currentBackgroundAnalysisRunStatus")
    blue_green = status.get("blueGreen", {}).get("prePromotionAnalysisRunStatus")
    found: dict[str, Any] | None = canary or blue_green
    return found


def set_weight(rollout: dict[str, Any]) -> int | None:
    """The canary weight the steps have reached (100 once every step is done)."""
    steps = rollout.get("spec", {}).get("strategy", {}).get("canary", {}).get("steps")
    if steps is None:
        return None
    index = rollout.get("status", {}).get("currentStepIndex", 0) or 0
    if index >= len(steps):
        return 100
    weights = [step["setWeight"] for step in steps[: index + 1] if "setWeight" in step]
    return int(weights[-1]) if weights else 0


def image_of(rollout: dict[str, Any]) -> str:
    return str(rollout["spec"]["template"]["spec"]["containers"][0]["image"])


def describe_step(rollout: dict[str, Any]) -> str:
    spec, status = rollout.get("spec", {}), rollout.get("status", {})
    strategy = spec.get("strategy", {})
    if "canary" in strategy:
        steps = strategy["canary"].get("steps", [])
        index = status.get("currentStepIndex", 0) or 0
        current = json.dumps(steps[index], separators=(",", ":")) if index < len(steps) else "done"
        return f"step {min(index + 1, len(steps))}/{len(steps)} {current}, weight {set_weight(rollout)}%"
    blue_green = status.get("blueGreen", {})
    return f"active {blue_green.get('activeSelector', '?')}, preview {blue_green.get('previewSelector', '?')}"


def describe_rollout(rollout: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """``tabula rollout status``: phase, step, weight, pauses, and analysis runs with their measurements."""
    status = rollout.get("status", {})
    name = rollout["metadata"]["name"]
    lines = [
        f"Rollout {name}: {status.get('phase', 'Unknown')}"
        + (f" - {status['message']}" if status.get("message") else "")
        + (" (aborted)" if status.get("abort") else ""),
        f"  image {image_of(rollout)}; {describe_step(rollout)}",
        (
            f"  replicas: {status.get('replicas', 0)} total, {status.get('updatedReplicas', 0)} updated, "
            f"{status.get('availableReplicas', 0)} available; stable {status.get('stableRS', '?')}, "
            f"current {status.get('currentPodHash', '?')}"
        ),
    ]
    for condition in status.get("pauseConditions") or []:
        lines.append(f"  paused: {condition.get('reason')} since {condition.get('startTime')}")
    for run in runs:
        run_status = run.get("status", {})
        lines.append(
            f"  analysis {run['metadata']['name']}: {run_status.get('phase', 'Pending')}"
            + (f" - {run_status['message']}" if run_status.get("message") else "")
        )
        for metric in run_status.get("metricResults", []):
            measurements = metric.get("measurements", [])
            last = measurements[-1].get("value", "") if measurements else ""
            lines.append(
                f"    {metric['name']}: {metric.get('phase')} ({metric.get('successful', 0)} ok, "
                f"{metric.get('failed', 0)} failed, {metric.get('inconclusive', 0)} inconclusive, "
                f"{metric.get('error', 0)} errors of {metric.get('count', 0)}); last {last or '-'}"
            )
    return lines
