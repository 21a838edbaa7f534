"""The closed release loop end to end: a REAL MLflow server and registry, the fake Kubernetes API
(playing the Argo Rollouts controller), real ``helm template`` and a recording fake of Helm's
cluster-side commands. Covers the promoted, failed-analysis and interrupted paths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from release.errors import ClusterTimeoutError, ReleaseError, ReleaseRejectedError
from release.loop import Cluster, ReleaseRequest, release
from tests.integration.release.conftest import cluster_with, production, version_tags
from tests.unit.release.fake_helm import RecordingFakeHelm
from tests.unit.release.fake_kube import FakeKube
from training.config import TrainingSettings

pytestmark = pytest.mark.integration

ROLLOUT = "/apis/argoproj.io/v1alpha1/namespaces/housing/rollouts/housing"
OLD_IMAGE = "localhost/housing-service:1-aaa"
NEW_IMAGE = "localhost/housing-service:2-bbb"
Scenario = Callable[[str, int], list[dict[str, Any]]]


def rollout_state(image: str, generation: int, phase: str, **status: Any) -> dict[str, Any]:
    pod_hash = "h2" if image == NEW_IMAGE else "h1"
    return {
        "metadata": {"generation": generation},
        "status": {
            "phase": phase,
            "observedGeneration": str(generation),
            "currentPodHash": pod_hash,
            "stableRS": pod_hash if phase == "Healthy" else "h1",
            **status,
        },
    }


def play_argo(fake: FakeKube, helm: RecordingFakeHelm, scenario: Scenario) -> None:
    """The fake controller: a new desired image bumps the generation and plays the scenario's states."""
    steps = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {"duration": "1m"}}]
    fake.put(
        ROLLOUT,
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "housing", "namespace": "housing", "generation": 1},
            "spec": {
                "template": {"spec": {"containers": [{"name": "service", "image": OLD_IMAGE}]}},
                "strategy": {"canary": {"steps": steps}},
            },
            "status": rollout_state(OLD_IMAGE, 1, "Healthy", currentStepIndex=4)["status"],
        },
    )

    def on_change(values: dict[str, Any]) -> None:
        image = f"{values['image']['repository']}:{values['image']['tag']}"
        rollout = fake.objects[ROLLOUT]
        generation = rollout["metadata"]["generation"] + 1
        rollout["metadata"]["generation"] = generation
        rollout["spec"]["template"]["spec"]["containers"][0]["image"] = image
        fake.sequences[ROLLOUT] = scenario(image, generation)

    helm.on_change = on_change


def installed_release() -> dict[str, Any]:
    return {
        "image": {"repository": "localhost/housing-service", "tag": "1-aaa"},
        "rollout": {"strategy": "canary", "provider": "argo"},
    }


def cluster(fake: FakeKube, lines: list[str], timeout: float = 30) -> tuple[Cluster, RecordingFakeHelm]:
    del fake  # the fixture points KUBECONFIG at it
    return cluster_with(installed_release(), lines, timeout)


REQUEST = ReleaseRequest(
    version=None,
    strategy="canary",
    provider="argo",
    image=NEW_IMAGE,
    git_sha=None,
    auto_promote=True,
    retry=False,
)


def good_canary(image: str, generation: int) -> list[dict[str, Any]]:
    if image != NEW_IMAGE:
        return [rollout_state(image, generation, "Healthy", currentStepIndex=4)]
    run = {"name": "housing-h2-1", "status": "Running"}
    return [
        rollout_state(
            image,
            generation,
            "Progressing",
            currentStepIndex=0,
            canary={"currentBackgroundAnalysisRunStatus": run},
        ),
        rollout_state(
            image,
            generation,
            "Paused",
            currentStepIndex=1,
            pauseConditions=[{"reason": "CanaryPauseStep", "startTime": "2025-01-01T00:00:00Z"}],
            canary={"currentBackgroundAnalysisRunStatus": run},
        ),
        rollout_state(
            image,
            generation,
            "Healthy",
            currentStepIndex=4,
            canary={"currentBackgroundAnalysisRunStatus": run | {"status": "Successful"}},
        ),
    ]


def test_successful_canary_moves_production_and_tags_the_version(
    fake: FakeKube, training: TrainingSettings
) -> None:
    lines: list[str] = []
    target, helm = cluster(fake, lines)
    play_argo(fake, helm, good_canary)

    assert release(target, training, REQUEST) == "2"

    assert production(training) == "2"
    tags = version_tags(training, "2")
    assert tags["release.state"] == "promoted"
    assert tags["release.image"] == NEW_IMAGE
    assert tags["release.stable_version"] == "1"
    assert tags["release.strategy"] == "canary/argo"
    assert tags["release.previous_revision"] == "1"
    assert tags["release.revision"] == "2"
    assert tags["release.result"].startswith("Rollout housing completed")
    assert tags["release.offline_decision"] == "rejected"
    assert tags["promotion.decision"] == "promoted"
    assert tags["promotion.previous_champion"] == "1"
    [upgrade] = helm.calls
    assert upgrade[0] == "upgrade"
    assert upgrade[1]["image"] == {"repository": "localhost/housing-service", "tag": "2-bbb"}
    assert "analysis" not in upgrade[1]["rollout"]  # Argo resolves the tracks itself
    # The manual pause was promoted the way the kubectl plugin does it.
    [promote] = fake.made("PATCH")
    assert (promote.path, promote.body) == (f"{ROLLOUT}/status", {"status": {"pauseConditions": None}})
    assert lines[-1] == "moved production from v1 to v2"
    # A second run has nothing left to do.
    assert release(target, training, REQUEST) == "2"
    assert len(helm.calls) == 1


def failed_analysis(image: str, generation: int) -> list[dict[str, Any]]:
    if image != NEW_IMAGE:
        return [rollout_state(image, generation, "Healthy", currentStepIndex=4)]
    failed = {
        "name": "housing-h2-1",
        "status": "Failed",
        "message": 'Metric "success-rate" assessed Failed due to failed (2) > failureLimit (1)',
    }
    return [
        rollout_state(image, generation, "Progressing", currentStepIndex=0),
        rollout_state(
            image,
            generation,
            "Degraded",
            currentStepIndex=0,
            abort=True,
            message="RolloutAborted: Rollout aborted update to revision 2",
            canary={"currentBackgroundAnalysisRunStatus": failed},
        ),
    ]


def test_failed_analysis_rolls_back_keeps_production_and_rejects(
    fake: FakeKube, training: TrainingSettings
) -> None:
    lines: list[str] = []
    target, helm = cluster(fake, lines)
    play_argo(fake, helm, failed_analysis)

    with pytest.raises(ReleaseRejectedError) as caught:
        release(target, training, REQUEST)

    assert caught.value.exit_code == 5
    assert str(caught.value) == (
        "v2 was rejected and rolled back: "
        'Metric "success-rate" assessed Failed due to failed (2) > failureLimit (1)'
    )
    assert production(training) == "1"
    tags = version_tags(training, "2")
    assert tags["release.state"] == "rejected"
    assert tags["release.reason"].startswith('Metric "success-rate" assessed Failed')
    assert tags["promotion.decision"] == "rejected"  # the offline gate's, untouched
    assert [call[0] for call in helm.calls] == ["upgrade", "rollback"]
    assert helm.calls[1] == ("rollback", 1)
    assert fake.objects[ROLLOUT]["spec"]["template"]["spec"]["containers"][0]["image"] == OLD_IMAGE
    assert "production stays at v1" in lines
    # A rejected version is not released again by accident.
    with pytest.raises(ReleaseError, match=r"v2 was rejected at .*pass --retry"):
        release(target, training, REQUEST)


def stuck(image: str, generation: int) -> list[dict[str, Any]]:
    if image != NEW_IMAGE:
        return [rollout_state(image, generation, "Healthy", currentStepIndex=4)]
    return [rollout_state(image, generation, "Progressing", currentStepIndex=2)]


def test_interrupted_release_resumes_without_deploying_twice(
    fake: FakeKube, training: TrainingSettings
) -> None:
    lines: list[str] = []
    target, helm = cluster(fake, lines, timeout=1.0)
    play_argo(fake, helm, stuck)

    with pytest.raises(ClusterTimeoutError, match=r"still in progress: re-run `housing release --version 2`"):
        release(target, training, REQUEST)
    assert version_tags(training, "2")["release.state"] == "analysing"
    assert production(training) == "1"

    # Another version cannot start over the unfinished release.
    with pytest.raises(ReleaseError, match=r"the release of v2 is in progress \(release.state=analysing\)"):
        release(target, training, ReleaseRequest(**{**REQUEST.__dict__, "version": "1"}))

    # The controller finishes meanwhile; the re-run picks the release up where it was.
    fake.sequences[ROLLOUT] = [
        rollout_state(
            NEW_IMAGE, fake.objects[ROLLOUT]["metadata"]["generation"], "Healthy", currentStepIndex=4
        )
    ]
    resumed, _ = cluster(fake, lines)
    resumed.helm = helm
    assert release(resumed, training, ReleaseRequest(**{**REQUEST.__dict__, "image": None})) == "2"
    assert [call[0] for call in helm.calls] == ["upgrade"]
    assert any(line.startswith("resuming the release of v2 (release.state=analysing") for line in lines)
    assert production(training) == "2"
    assert version_tags(training, "2")["release.state"] == "promoted"


def test_registry_and_cluster_disagreeing_stops_before_any_change(
    fake: FakeKube, training: TrainingSettings
) -> None:
    target, helm = cluster(fake, [])
    helm.revisions[-1]["image"]["tag"] = "7-zzz"
    with pytest.raises(
        ReleaseError, match="the cluster serves v7 but production is v1: registry and cluster disagree"
    ):
        release(target, training, REQUEST)
    assert helm.calls == []
    assert "release.state" not in version_tags(training, "2")
