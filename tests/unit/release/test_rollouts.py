"""Argo Rollout operations: the exact patches sent, as ``kubectl argo rollouts`` sends them."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from release.kube import Kube
from release.rollouts import Rollouts, describe_rollout, set_weight
from tests.unit.release.fake_kube import FakeKube

pytestmark = pytest.mark.unit

ROLLOUT_PATH = "/apis/argoproj.io/v1alpha1/namespaces/housing/rollouts/housing"
STEPS = [
    {"setWeight": 10},
    {"pause": {"duration": "2m"}},
    {"setWeight": 30},
    {"pause": {}},
    {"setWeight": 60},
    {"pause": {"duration": "3m"}},
]
SELECTOR = {
    "app.kubernetes.io/name": "housing",
    "app.kubernetes.io/instance": "housing",
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
            "name": "housing",
            "namespace": "housing",
            "generation": 4,
            "annotations": {"rollout.argoproj.io/revision": "3"},
        },
        "spec": {
            "selector": {"matchLabels": SELECTOR},
            "template": pod_template("localhost/housing-service:3-ccc"),
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
    message = Rollouts(kube).promote("housing", full=False)
    patches = fake.made("PATCH")
    assert [(p.path, p.content_type, p.body) for p in patches] == [
        (f"{ROLLOUT_PATH}/status", "application/merge-patch+json", {"status": {"pauseConditions": None}}),
        (ROLLOUT_PATH, "application/merge-patch+json", {"spec": {"paused": False}}),
    ]
    assert message == "Rollout housing promoted: cleared its pause, unpaused it"
    assert "pauseConditions" not in fake.objects[ROLLOUT_PATH]["status"]


def test_promote_with_nothing_paused_moves_to_the_next_step(fake: FakeKube, kube: Kube) -> None:
    """pkg/kubectl-argo-rollouts/cmd/promote/promote.go clearPauseConditionsPatchWithStep."""
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=1))
    Rollouts(kube).promote("housing", full=False)
    [patch] = fake.made("PATCH")
    assert (patch.path, patch.body) == (
        f"{ROLLOUT_PATH}/status",
        {"status": {"pauseConditions": None, "currentStepIndex": 2}},
    )


def test_promote_full(fake: FakeKube, kube: Kube) -> None:
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=1, currentPodHash="new", stableRS="old"))
    Rollouts(kube).promote("housing", full=True)
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
    assert Rollouts(kube).promote("housing", full=True) == "Rollout housing is already fully promoted"
    assert fake.made("PATCH") == []


def test_abort_sets_status_abort(fake: FakeKube, kube: Kube) -> None:
    fake.put(ROLLOUT_PATH, rollout(currentStepIndex=1))
    Rollouts(kube).abort("housing")
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
        Rollouts(kube).retry("housing")
        == "Rollout housing retried: the update to the new version starts again"
    )
    [patch] = fake.made("PATCH")
    assert (patch.path, patch.content_type, patch.body) == (
        f"{ROLLOUT_PATH}/status",
        "application/merge-patch+json",
        {"status": {"abort": False}},
    )


def add_replica_set(fake: FakeKube, owner_uid: str, revision: int, image: str, pod_hash: str) -> None:
    fake.put(
        f"/apis/apps/v1/namespaces/housing/replicasets/housing-{pod_hash}",
        {
            "metadata": {
                "name": f"housing-{pod_hash}",
                "labels": dict(SELECTOR) | {"rollouts-pod-template-hash": pod_hash},
                "annotations": {"rollout.argoproj.io/revision": str(revision)},
                "ownerReferences": [{"kind": "Rollout", "name": "housing", "uid": owner_uid}],
            },
            "spec": {"template": pod_template(image, pod_hash)},
        },
    )


def test_undo_puts_back_the_previous_revisions_template(fake: FakeKube, kube: Kube) -> None:
    uid = fake.put(ROLLOUT_PATH, rollout(currentStepIndex=6, phase="Healthy"))["metadata"]["uid"]
    add_replica_set(fake, uid, 1, "localhost/housing-service:1-aaa", "h1")
    add_replica_set(fake, uid, 2, "localhost/housing-service:2-bbb", "h2")
    add_replica_set(fake, uid, 3, "localhost/housing-service:3-ccc", "h3")
    add_replica_set(fake, "someone-else", 9, "other:9-x", "h9")
    message = Rollouts(kube).undo("housing", None)
    [listing] = fake.made("GET", "/replicasets")
    assert listing.query["labelSelector"] == [
        "app.kubernetes.io/component=server,app.kubernetes.io/instance=housing,app.kubernetes.io/name=housing"
    ]
    [patch] = fake.made("PATCH")
    assert (patch.path, patch.content_type) == (ROLLOUT_PATH, "application/json-patch+json")
    assert patch.body == [
        {"op": "replace", "path": "/spec/template", "value": pod_template("localhost/housing-service:2-bbb")}
    ]
    assert message.startswith("Rollout housing rolled back to revision 2")


def test_undo_to_a_missing_revision_fails_clearly(fake: FakeKube, kube: Kube) -> None:
    uid = fake.put(ROLLOUT_PATH, rollout())["metadata"]["uid"]
    add_replica_set(fake, uid, 3, "localhost/housing-service:3-ccc", "h3")
    with pytest.raises(Exception, match="has no revision before 3"):
        Rollouts(kube).undo("housing", None)
    with pytest.raises(Exception, match="has no ReplicaSet of revision 7"):
        Rollouts(kube).undo("housing", 7)
    assert fake.made("PATCH") == []


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
            "name": "housing-h3-3",
            "creationTimestamp": "2025-01-01T00:00:00Z",
            "ownerReferences": [{"kind": "Rollout", "name": "housing", "uid": uid}],
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
    fake.put("/apis/argoproj.io/v1alpha1/namespaces/housing/analysisruns/housing-h3-3", run)
    other = copy.deepcopy(run)
    other["metadata"] |= {"name": "other", "ownerReferences": [{"uid": "x"}]}
    fake.put("/apis/argoproj.io/v1alpha1/namespaces/housing/analysisruns/other", other)
    rollouts = Rollouts(kube)
    current = rollouts.get("housing")
    lines = describe_rollout(current, rollouts.analysis_runs(current))
    assert lines == [
        "Rollout housing: Paused - CanaryPauseStep",
        '  image localhost/housing-service:3-ccc; step 4/6 {"pause":{}}, weight 30%',
        "  replicas: 3 total, 1 updated, 3 available; stable h2, current h3",
        "  paused: CanaryPauseStep since 2025-01-01T00:00:00Z",
        "  analysis housing-h3-3: Running",
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
