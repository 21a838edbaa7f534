"""Argo Rollout operations: the exact patches sent, as ``kubectl argo rollouts`` sends them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from release.cluster import Cluster
from release.config import ReleaseSettings
from release.drivers import installed_driver
from release.helm import Helm
from release.kube import Kube
from release.rollouts import Rollouts, describe_rollout, set_weight
from tests.unit.release.fake_helm import RecordingFakeHelm
from tests.unit.release.fake_kube import FakeKube

pytestmark = pytest.mark.unit

ROLLOUT_PATH = "/apis/argoproj.io/v1alpha1/namespaces/tabula/rollouts/tabula"
STEPS = [
    {"setWeight": 10},
    {"pause": {"duration": "2m"}},
    {"setWeight": 30},
    {"pause": {}},
    {"setWeight": 60},
    {"pause": {"duration": "3m"}},
]
SELECTOR = {
    "app.kubernetes.io/name": "tabula",
    "app.kubernetes.io/instance": "tabula",
    "app.kubernetes.io/component": "server",
}


def pod_template(image: str, pod_hash: str | None = None) -> dict[str, Any]:
    labels = dict(SELECTOR) | ({"rollouts-pod-template-hash": pod_hash} if pod_hash else {})
    return {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "service", "image": image}]}}


def rollout(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {
            "name": "tabula",
            "namespace": "tabula",
            "generation": 4,
            "annotations": {"rollout.argoproj.io/revision": "3"},
        },
        "spec": {
            "selector": {"matchLabels": SELECTOR},
            "template": pod_template("localhost/tabula-service:3-ccc"),
            "strategy": {"canary": {"steps": STEPS}},
        },
        "status": {"phase": "Progressing", "observedGeneration": "4", **status},
    }


def test_promote_a_paused_rollout_clears_the_pause_then_unpauses(fake: FakeKube, kube: Kube) -> None:
    obj = rollout(
        currentStepIndex=3, pauseConditions=[{"reason": "CanaryPauseStep", "startTime": "t"}], phase="Paused"
    )
    obj["spec"]["paused"] = True
    fake.put(ROLLOUT_PATH, obj)
    message = Rollouts(kube).promote("tabula", full=False)
    patches = fake.made("PATCH")
    assert [(p.path, p.content_type, p.body) for p in patches] == [
        (f"{ROLLOUT_PATH}/status", "application/merge-patch+json", {"status": {"pauseConditions": None}}),
        (ROLLOUT_PATH, "application/merge-patch+json", {"spec": {"paused": False}}),
    ]
    assert message == "Rollout tabula promoted: cleared its pause, unpaused it"
    assert "pauseConditions" not in fake.objects[ROLLOUT_PATH]["status"]


def test_promote_with_nothing_paused_moves_to_the_next_step(fake: FakeKube, kube: Kube) -> None:
    """pkg/kubectl-argo-rollouts/cmd/promote/promote.go clearPauseConditionsPatchWithStep."""
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=1))
    Rollouts(kube).promote("tabula", full=False)
    [patch] = fake.made("PATCH")
    assert (patch.path, patch.body) == (
        f"{ROLLOUT_PATH}/status",
        {"status": {"pauseConditions": None, "currentStepIndex": 2}},
    )


def test_promote_full(fake: FakeKube, kube: Kube) -> None:
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=1, currentPodHash="new", stableRS="old"))
    Rollouts(kube).promote("tabula", full=True)
    [patch] = fake.made("PATCH")
    assert (patch.path, patch.content_type, patch.body) == (
        f"{ROLLOUT_PATH}/status",
        "application/merge-patch+json",
        {"status": {"promoteFull": True}},
    )


def test_promote_full_of_a_completed_rollout_changes_nothing(fake: FakeKube, kube: Kube) -> None:
    fake.put(
        ROLLOUT_PATH, rollout(currentStepIndex=6, currentPodHash="same", stableRS="same", phase="Healthy")
    )
    assert Rollouts(kube).promote("tabula", full=True) == "Rollout tabula is already fully promoted"
    assert fake.made("PATCH") == []


def test_abort_sets_status_abort(fake: FakeKube, kube: Kube) -> None:
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=1))
    Rollouts(kube).abort("tabula")
    [patch] = fake.made("PATCH")
    assert (patch.path, patch.content_type, patch.body) == (
        f"{ROLLOUT_PATH}/status",
        "application/merge-patch+json",
        {"status": {"abort": True}},
    )
    assert fake.objects[ROLLOUT_PATH]["status"]["abort"] is True


def test_retry_clears_status_abort(fake: FakeKube, kube: Kube) -> None:
    """pkg/kubectl-argo-rollouts/cmd/retry/retry.go retryRolloutPatch."""
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=0, abort=True))
    assert (
        Rollouts(kube).retry("tabula") == "Rollout tabula retried: the update to the new version starts again"
    )
    [patch] = fake.made("PATCH")
    assert (patch.path, patch.content_type, patch.body) == (
        f"{ROLLOUT_PATH}/status",
        "application/merge-patch+json",
        {"status": {"abort": False}},
    )


def test_status_shows_step_weight_pause_and_analysis_measurements(fake: FakeKube, kube: Kube) -> None:
    uid = fake.put(
        ROLLOUT_PATH,
        rollout(
            currentStepIndex=3,
            phase="Paused",
            message="CanaryPauseStep",
            pauseConditions=[{"reason": "CanaryPauseStep", "startTime": "2025-01-01T00:00:00Z"}],
            replicas=3,
            updatedReplicas=1,
            availableReplicas=3,
            stableRS="h2",
            currentPodHash="h3",
        ),
    )["metadata"]["uid"]
    run = {
        "metadata": {
            "name": "tabula-h3-3",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "ownerReferences": [{"kind": "Rollout", "name": "tabula", "uid": uid}],
        },
        "status": {
            "phase": "Running",
            "metricResults": [
                {
                    "name": "success-rate",
                    "phase": "Running",
                    "count": 2,
                    "successful": 2,
                    "measurements": [{"value": "[0.998]"}, {"value": "[0.999]"}],
                },
                {
                    "name": "latency-p95",
                    "phase": "Failed",
                    "count": 1,
                    "failed": 1,
                    "measurements": [{"value": "[0.9]"}],
                },
            ],
        },
    }
    fake.put("/apis/argoproj.io/v1alpha1/namespaces/tabula/analysisruns/tabula-h3-3", run)
    other = copy.deepcopy(run)
    other["metadata"] |= {"name": "other", "ownerReferences": [{"uid": "x"}]}
    fake.put("/apis/argoproj.io/v1alpha1/namespaces/tabula/analysisruns/other", other)
    rollouts = Rollouts(kube)
    current = rollouts.get("tabula")
    lines = describe_rollout(current, rollouts.analysis_runs(current))
    assert lines == [
        "Rollout tabula: Paused - CanaryPauseStep",
        '  image localhost/tabula-service:3-ccc; step 4/6 {"pause":{}}, weight 30%',
        "  replicas: 3 total, 1 updated, 3 available; stable h2, current h3",
        "  paused: CanaryPauseStep since 2025-01-01T00:00:00Z",
        "  analysis tabula-h3-3: Running",
        "    success-rate: Running (2 ok, 0 failed, 0 inconclusive, 0 errors of 2); last [0.999]",
        "    latency-p95: Failed (0 ok, 1 failed, 0 inconclusive, 0 errors of 1); last [0.9]",
    ]


def test_set_weight_follows_the_steps() -> None:
    assert [set_weight(rollout(currentStepIndex=index)) for index in range(7)] == [
        10,
        10,
        30,
        30,
        60,
        60,
        100,
    ]


def test_undo_goes_through_helm_and_never_patches_the_rollouts_template(
    fake: FakeKube, kube: Kube, settings: ReleaseSettings
) -> None:
    # `kubectl argo rollouts undo` patches spec.template (pkg/kubectl-argo-rollouts/cmd/undo/undo.go),
    # a field Helm owns under server-side apply: the next upgrade would conflict with it or revert it.
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=6, phase="Healthy"))
    helm = RecordingFakeHelm(
        Helm.from_settings(settings), {"image": {"tag": "3-ccc"}, "rollout": {"strategy": "canary"}}
    )
    driver = installed_driver(Cluster(settings, helm, kube, lambda _: None))
    assert driver.undo(None) == "helm rollback tabula (previous revision) done"
    assert driver.undo(2) == "helm rollback tabula 2 done"
    assert helm.calls == [("rollback", None), ("rollback", 2)]
    assert fake.made("PATCH") == []
