"""The release loop without Argo Rollouts: a REAL MLflow registry, a REAL Prometheus scraping the
service's own metrics (``ServiceMetrics``) of both tracks, the fake Kubernetes API (playing the
Deployment controller on what the REAL ``helm template`` renders) and a recording fake of Helm's
cluster-side commands. The loop runs the analysis itself, on a clock 60 times faster than real time.
"""

from __future__ import annotations

from typing import Any

import pytest

from release.errors import ReleaseRejectedError
from release.loop import ReleaseRequest, release
from tests.fakes.clock import ScaledClock
from tests.fakes.cluster import selected_colour
from tests.integration.release.conftest import (
    Tracks,
    cluster_with,
    production,
    serve,
    version_tags,
    wait_for_series,
)
from tests.unit.release.fake_helm import RecordingFakeHelm
from tests.unit.release.fake_kube import FakeKube
from training.config import TrainingSettings

pytestmark = pytest.mark.integration

REPOSITORY = "localhost/tabula-service"
NEW_IMAGE = f"{REPOSITORY}:2-bbb"
# Three measurements a minute apart on the fast clock, no failure tolerated.
ANALYSIS = {"interval": "1m", "count": 3, "initialDelay": "1m", "failureLimit": 0, "window": "30s"}
TRACKS = {"canary": ("stable", "canary"), "blueGreen": ("blue", "green")}


def native_release(strategy: str, training: TrainingSettings) -> dict[str, Any]:
    return {
        "image": {"repository": REPOSITORY, "tag": "1-aaa"},
        "model": {"name": training.model_name, "version": "1"},
        "rollout": {"strategy": strategy, "provider": "native", "analysis": ANALYSIS},
    }


def start(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], strategy: str
) -> tuple[Any, RecordingFakeHelm, list[str]]:
    state, prometheus = tracks
    stable, candidate = TRACKS[strategy]
    state.register({"tabula_io_track": stable}, "1")
    state.register({"tabula_io_track": candidate}, "2")
    wait_for_series(prometheus, 'model_version="1"')
    if state.candidate != "none":
        wait_for_series(prometheus, 'model_version="2"')
    lines: list[str] = []
    clock = ScaledClock(60)
    target, helm = cluster_with(
        native_release(strategy, training), lines, timeout=1800, clock=clock, prometheus_url=prometheus
    )
    serve(fake, target, helm, clock)
    return target, helm, lines


def served_images(fake: FakeKube) -> dict[str, str]:
    return {
        path.rsplit("/", 1)[-1]: obj["spec"]["template"]["spec"]["containers"][0]["image"]
        for path, obj in fake.objects.items()
        if "/deployments/" in path
    }


def record_serving_colour(fake: FakeKube, helm: RecordingFakeHelm) -> list[tuple[str, int]]:
    """Native blue/green: after every Helm change, the colour the main Service selects and its ready pods."""
    applied = helm.on_change
    assert applied is not None
    serving = [selected_colour(fake)]

    def record(values: dict[str, Any]) -> None:
        applied(values)
        serving.append(selected_colour(fake))

    helm.on_change = record
    return serving


@pytest.mark.parametrize("strategy", ["canary", "blueGreen"])
def test_good_candidate_passes_the_analysis_and_takes_all_traffic(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], strategy: str
) -> None:
    target, helm, lines = start(fake, training, tracks, strategy)
    serving = record_serving_colour(fake, helm) if strategy == "blueGreen" else []

    assert (
        release(target, training, ReleaseRequest(strategy=strategy, provider="native", image=NEW_IMAGE))
        == "2"
    )

    assert production(training) == "2"
    tags = version_tags(training, "2")
    assert tags["release.state"] == "promoted"
    assert tags["release.strategy"] == f"{strategy}/native"
    assert tags["release.result"].startswith("analysis passed: success-rate 3 ok")
    assert int(tags["release.evidence.requests.candidate"]) >= 200
    assert len(tags["release.evidence.success-rate"].split(",")) == 3
    # Every measurement came from Prometheus, and none lacked data.
    measured = [line for line in lines if line.startswith("analysis success-rate #")]
    assert len(measured) == 3, lines
    assert all(line.endswith(("-> Successful (Running)", "(Successful)")) for line in measured)
    if strategy == "canary":
        candidate, promotion = (call[1] for call in helm.calls)
        assert candidate["rollout"]["native"]["canary"] == {"tag": "2-bbb", "modelVersion": "2"}
        assert promotion["image"]["tag"] == "2-bbb"
        assert promotion["rollout"]["native"]["canary"]["tag"] == ""
        assert served_images(fake) == {"tabula": NEW_IMAGE}
    else:
        candidate, scale_up, switch, scale_down = (call[1] for call in helm.calls)
        assert candidate["rollout"]["native"]["blueGreen"] == {"blueTag": "1-aaa", "greenTag": "2-bbb"}
        # The preview grows to blue's 2 pods, the Service switches, blue keeps 2 pods for the delay.
        assert scale_up["rollout"]["native"]["blueGreen"] == {"previewReplicas": 2}
        assert switch["rollout"]["native"]["blueGreen"] == {"activeColor": "green", "previewReplicas": 2}
        assert scale_down["rollout"]["native"]["blueGreen"] == {"previewReplicas": 1}
        assert serving == [("blue", 2), ("blue", 2), ("blue", 2), ("green", 2), ("green", 2)]
        # production moves at the switch; the scale-down comes scaleDownDelaySeconds (60) later.
        assert lines.index("moved production from v1 to v2") < lines.index(
            "blue scaled down to previewReplicas=1"
        )
        # The old colour keeps one pod for a fast switch back; users are on green.
        assert served_images(fake) == {"tabula-blue": f"{REPOSITORY}:1-aaa", "tabula-green": NEW_IMAGE}


@pytest.mark.parametrize("tracks", ["errors"], indirect=True, ids=["10%-errors"])
def test_erroring_canary_fails_the_analysis_and_is_rolled_back(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str]
) -> None:
    target, helm, lines = start(fake, training, tracks, "canary")

    with pytest.raises(
        ReleaseRejectedError,
        match=r'rolled back: Metric "success-rate" assessed Failed due to failed \(1\) > failureLimit \(0\)',
    ):
        release(target, training, ReleaseRequest(strategy="canary", provider="native", image=NEW_IMAGE))

    assert production(training) == "1"
    assert version_tags(training, "2")["release.state"] == "rejected"
    assert [call[0] for call in helm.calls] == ["upgrade", "rollback"]
    assert helm.calls[1] == ("rollback", 1)
    assert served_images(fake) == {"tabula": f"{REPOSITORY}:1-aaa"}
    assert "production stays at v1" in lines


@pytest.mark.parametrize("tracks", ["none"], indirect=True, ids=["no-traffic"])
@pytest.mark.parametrize("strategy", ["canary", "blueGreen"])
def test_a_candidate_without_traffic_is_no_evidence_and_rolled_back(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], strategy: str
) -> None:
    target, helm, lines = start(fake, training, tracks, strategy)

    with pytest.raises(
        ReleaseRejectedError, match="rolled back: no evidence: Prometheus has no request series"
    ):
        release(target, training, ReleaseRequest(strategy=strategy, provider="native", image=NEW_IMAGE))

    tags = version_tags(training, "2")
    assert (tags["release.state"], tags["release.evidence.requests.candidate"]) == ("rejected", "missing")
    # The loop's own analysis saw empty results, never a pass: the chart guards every `result[0]` with
    # `len(result) > 0`, so an empty result fails the condition (Argo: utils/evaluate/evaluate.go).
    measured = [line for line in lines if line.startswith("analysis success-rate #")]
    assert measured, "\n".join(lines)
    assert all(line.endswith("[] -> Failed (Failed)") for line in measured), "\n".join(lines)
    assert [call[0] for call in helm.calls] == ["upgrade", "rollback"]
    assert production(training) == "1"


@pytest.mark.parametrize("tracks", ["none"], indirect=True, ids=["no-traffic"])
def test_without_auto_promotion_no_evidence_leaves_the_candidate_for_a_decision(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str]
) -> None:
    target, helm, _ = start(fake, training, tracks, "canary")
    request = ReleaseRequest(strategy="canary", provider="native", image=NEW_IMAGE, auto_promote=False)

    with pytest.raises(ReleaseRejectedError, match="rejected and left paused: no evidence"):
        release(target, training, request)

    assert [call[0] for call in helm.calls] == ["upgrade"]
    assert served_images(fake) == {"tabula": f"{REPOSITORY}:1-aaa", "tabula-canary": NEW_IMAGE}
    assert production(training) == "1"
