"""The closed release loop with Argo Rollouts: a REAL MLflow registry, the fake Kubernetes API with the
fake Argo controller (tests/fakes/argo.py, following Argo v1.8.3's source) running the REAL chart's
Rollout, AnalysisRuns measured against a REAL Prometheus that scrapes the service's own metrics of
both versions, real ``helm template`` and a recording fake of Helm's cluster-side commands.

Time runs 60 times faster on a shared clock (a 2-minute pause lasts 2 s), for the controller and the
loop alike; every pause, delay and interval still passes on that clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from release.cluster import Cluster
from release.errors import ClusterTimeoutError, ReleaseError, ReleaseRejectedError
from release.loop import ReleaseRequest, release
from tests.fakes.argo import FakeArgo, PauseRecord, pod_template_hash
from tests.fakes.clock import ScaledClock
from tests.integration.release.conftest import (
    Tracks,
    cluster_with,
    production,
    serve,
    version_tags,
    wait_for_series,
)
from tests.unit.release.fake_helm import RecordingFakeHelm
from tests.unit.release.fake_kube import FakeKube, Request, Response
from training.config import TrainingSettings

pytestmark = pytest.mark.integration

ROLLOUT = "/apis/argoproj.io/v1alpha1/namespaces/tabula/rollouts/tabula"
RUNS = "/apis/argoproj.io/v1alpha1/namespaces/tabula/analysisruns/"
REPOSITORY = "localhost/tabula-service"
NEW_IMAGE = f"{REPOSITORY}:2-bbb"
SCALE = 60
# The chart's default steps: timed pauses only.
DEFAULT_STEPS: list[dict[str, Any]] = [
    {"setWeight": 10},
    {"pause": {"duration": "2m"}},
    {"setWeight": 30},
    {"pause": {"duration": "3m"}},
    {"setWeight": 60},
    {"pause": {"duration": "3m"}},
]
WITH_MANUAL_PAUSE: list[dict[str, Any]] = [
    {"setWeight": 20},
    {"pause": {"duration": "1m"}},
    {"setWeight": 50},
    {"pause": {}},
]
REQUEST = ReleaseRequest(strategy="canary", provider="argo", image=NEW_IMAGE)


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock(SCALE)


@pytest.fixture
def argo(fake: FakeKube, clock: ScaledClock, tracks: tuple[Tracks, str]) -> Iterator[FakeArgo]:
    controller = FakeArgo(fake, clock, on_replica_set=tracks[0].register_pod)
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


def installed(training: TrainingSettings, prometheus: str, strategy: dict[str, Any]) -> dict[str, Any]:
    """v1 served by an Argo Rollout; a fast analysis on the accelerated clock (1 s apart in real time)."""
    analysis: dict[str, Any] = {
        "prometheusAddress": prometheus,
        "interval": "1m",
        "count": 4,
        "initialDelay": "2m",
        "failureLimit": 0,
        "consecutiveErrorLimit": 4,
        "window": "30s",
    }
    # The in-cluster load Job is no part of these tests (the fake runs no Job-provider metric): the
    # exporters get the traffic.
    analysis["load"] = {"enabled": False}
    return {
        "image": {"repository": REPOSITORY, "tag": "1-aaa"},
        "model": {"name": training.model_name, "version": "1"},
        "rollout": {"strategy": next(iter(strategy)), "provider": "argo", "analysis": analysis, **strategy},
    }


def canary(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"canary": {"steps": steps, "analysisStartingStep": 0}}


def start(
    fake: FakeKube,
    training: TrainingSettings,
    tracks: tuple[Tracks, str],
    clock: ScaledClock,
    argo: FakeArgo,
    strategy: dict[str, Any],
) -> tuple[Cluster, RecordingFakeHelm, list[str]]:
    lines: list[str] = []
    target, helm = cluster_with(
        installed(training, tracks[1], strategy), lines, timeout=1800, clock=clock, prometheus_url=tracks[1]
    )
    serve(fake, target, helm, clock)
    argo.reconcile()
    assert fake.objects[ROLLOUT]["status"]["phase"] == "Healthy"
    # Prometheus discovers targets in real time while the analysis runs 60 times faster: register the
    # candidate's pods (the pod template hash of what the release will render) before it starts.
    overrides = {
        "image": {"repository": REPOSITORY, "tag": "2-bbb"},
        "model": {"version": "2"},
        "rollout": {"strategy": next(iter(strategy)), "provider": "argo"},
    }
    [rollout] = [obj for obj in target.render(overrides) if obj["kind"] == "Rollout"]
    tracks[0].register_pod(pod_template_hash(rollout["spec"]["template"]), NEW_IMAGE)
    wait_for_series(tracks[1], 'model_version="1"')
    if tracks[0].candidate != "none":
        wait_for_series(tracks[1], 'model_version="2"')
    return target, helm, lines


def status_patches(fake: FakeKube) -> list[Any]:
    return [request.body for request in fake.made("PATCH", f"{ROLLOUT}/status")]


def runs(fake: FakeKube) -> list[dict[str, Any]]:
    return [obj for path, obj in sorted(fake.objects.items()) if path.startswith(RUNS)]


def timed(pauses: list[PauseRecord]) -> list[PauseRecord]:
    return [pause for pause in pauses if pause.duration is not None]


def test_good_canary_is_promoted_after_every_timed_pause_ran_its_full_duration(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], clock: ScaledClock, argo: FakeArgo
) -> None:
    target, helm, lines = start(fake, training, tracks, clock, argo, canary(DEFAULT_STEPS))

    assert release(target, training, REQUEST) == "2"

    assert production(training) == "2"
    # The controller's timing was respected: the loop never touched a pause.
    assert status_patches(fake) == []
    assert [pause.duration for pause in timed(argo.pauses)] == [120, 180, 180]
    for pause in timed(argo.pauses):
        assert pause.ended is not None
        assert pause.duration is not None
        assert pause.ended - pause.started >= pause.duration, pause
        assert pause.ended_by == "duration"
    tags = version_tags(training, "2")
    assert tags["release.state"] == "promoted"
    assert tags["release.strategy"] == "canary/argo"
    assert int(tags["release.evidence.requests.candidate"]) >= 200
    assert int(tags["release.evidence.requests.stable"]) >= 200
    values = tags["release.evidence.success-rate"].split(",")
    assert len(values) >= 3
    assert all(float(value) >= 0.99 for value in values), values
    assert tags["release.result"].startswith("Rollout tabula completed")
    [upgrade] = helm.calls
    assert "stableModelVersion" not in str(upgrade[1])
    # The measurements were printed.
    assert any(line.startswith("evidence: success-rate ") for line in lines), lines
    assert any(line.startswith("evidence: candidate track ") for line in lines), lines
    assert lines[-1] == "moved production from v1 to v2"
    # A second run has nothing left to do.
    assert release(target, training, REQUEST) == "2"
    assert len(helm.calls) == 1


def successful_measurements(fake: FakeKube) -> int:
    results = runs(fake)[-1].get("status", {}).get("metricResults", [])
    return min((result["successful"] for result in results), default=0)


def test_a_manual_pause_is_promoted_only_once_enough_measurements_succeeded(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], clock: ScaledClock, argo: FakeArgo
) -> None:
    target, _, _ = start(fake, training, tracks, clock, argo, canary(WITH_MANUAL_PAUSE))
    seen_at_promotion: list[int] = []

    def record(request: Request) -> Response | None:
        if request.method == "PATCH" and request.path == f"{ROLLOUT}/status":
            seen_at_promotion.append(successful_measurements(fake))
        return None

    fake.hooks.append(record)

    assert release(target, training, REQUEST) == "2"

    assert status_patches(fake) != []
    assert seen_at_promotion
    assert min(seen_at_promotion) >= 3
    [manual] = [pause for pause in argo.pauses if pause.duration is None]
    assert manual.ended_by == "promote"
    [one_minute] = timed(argo.pauses)
    assert one_minute.ended is not None
    assert one_minute.ended - one_minute.started >= 60
    assert production(training) == "2"


@pytest.mark.parametrize("tracks", ["errors"], indirect=True)
def test_failing_analysis_is_rejected_and_rolled_back(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], clock: ScaledClock, argo: FakeArgo
) -> None:
    target, helm, lines = start(fake, training, tracks, clock, argo, canary(WITH_MANUAL_PAUSE))

    with pytest.raises(ReleaseRejectedError) as caught:
        release(target, training, REQUEST)

    assert caught.value.exit_code == 5
    assert str(caught.value) == (
        "v2 was rejected and rolled back: "
        'Metric "success-rate" assessed Failed due to failed (1) > failureLimit (0)'
    )
    assert production(training) == "1"
    tags = version_tags(training, "2")
    assert tags["release.state"] == "rejected"
    assert tags["release.reason"].startswith('Metric "success-rate" assessed Failed')
    assert float(tags["release.evidence.success-rate"]) < 0.99
    assert tags["promotion.decision"] == "rejected"  # the offline gate's, untouched
    assert [call[0] for call in helm.calls] == ["upgrade", "rollback"]
    [run] = runs(fake)
    assert run["status"]["phase"] == "Failed"  # and the controller aborted the rollout itself
    rollout = fake.objects[ROLLOUT]
    assert rollout["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REPOSITORY}:1-aaa"
    assert fake.objects[ROLLOUT]["status"]["phase"] == "Healthy"
    assert "production stays at v1" in lines
    with pytest.raises(ReleaseError, match=r"v2 was rejected at .*pass --retry"):
        release(target, training, REQUEST)


@pytest.mark.parametrize("tracks", ["none"], indirect=True)
def test_a_candidate_without_traffic_is_no_evidence(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], clock: ScaledClock, argo: FakeArgo
) -> None:
    target, helm, _ = start(fake, training, tracks, clock, argo, canary(WITH_MANUAL_PAUSE))

    with pytest.raises(
        ReleaseRejectedError, match="rolled back: no evidence: Prometheus has no request series"
    ):
        release(target, training, REQUEST)

    assert production(training) == "1"
    tags = version_tags(training, "2")
    assert tags["release.state"] == "rejected"
    assert tags["release.reason"].startswith("no evidence: ")
    assert tags["release.evidence.requests.candidate"] == "missing"
    # Argo itself never saw a pass: the chart guards every `result[0]` with `len(result) > 0`, so an
    # empty result fails the condition (utils/evaluate/evaluate.go) and the run fails.
    [run] = runs(fake)
    assert run["status"]["phase"] == "Failed"
    assert [call[0] for call in helm.calls] == ["upgrade", "rollback"]


def test_a_run_cancelled_before_it_measured_is_not_a_pass(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], clock: ScaledClock, argo: FakeArgo
) -> None:
    # The steps end before the analysis' initialDelay: Argo promotes fully and cancels the run,
    # which then counts as Successful without a single measurement (analysis/analysis.go).
    target, helm, lines = start(
        fake, training, tracks, clock, argo, canary([{"setWeight": 50}, {"pause": {"duration": "1m"}}])
    )

    with pytest.raises(ReleaseRejectedError, match="no evidence: metric success-rate has 0 successful"):
        release(target, training, REQUEST)

    rollout = fake.objects[ROLLOUT]
    stable = pod_template_hash(rollout["spec"]["template"])
    [run] = [run for run in runs(fake) if run["metadata"]["labels"]["rollouts-pod-template-hash"] != stable]
    assert run["spec"]["terminate"] is True
    assert (run["status"]["phase"], run["status"]["metricResults"]) == ("Successful", [])
    assert production(training) == "1"
    assert version_tags(training, "2")["release.reason"] == (
        "no evidence: metric success-rate has 0 successful measurements, fewer than minMeasurements 3"
    )
    # The promoted candidate was replaced at once by the stable version, without a new analysis.
    assert [call[0] for call in helm.calls] == ["upgrade", "rollback"]
    assert {"status": {"promoteFull": True}} in status_patches(fake)
    assert rollout["spec"]["template"]["spec"]["containers"][0]["image"] == f"{REPOSITORY}:1-aaa"
    assert rollout["status"]["phase"] == "Healthy"
    assert "production stays at v1" in lines


def test_manual_decision_leaves_a_manual_pause_to_the_user_and_a_rerun_resumes(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], clock: ScaledClock, argo: FakeArgo
) -> None:
    target, helm, lines = start(
        fake, training, tracks, clock, argo, canary([{"setWeight": 50}, {"pause": {}}])
    )
    target.settings = target.settings.model_copy(update={"timeout_seconds": 540})

    with pytest.raises(ClusterTimeoutError, match="still in progress"):
        release(target, training, ReleaseRequest(strategy="canary", image=NEW_IMAGE, auto_promote=False))

    assert status_patches(fake) == []
    assert fake.objects[ROLLOUT]["status"]["phase"] == "Paused"
    assert "Rollout tabula waits for `tabula rollout promote` (or abort)" in lines
    assert version_tags(training, "2")["release.state"] == "analysing"
    assert [call[0] for call in helm.calls] == ["upgrade"]

    # Another version cannot start over the unfinished release.
    with pytest.raises(ReleaseError, match=r"the release of v2 is in progress \(release.state=analysing\)"):
        release(target, training, ReleaseRequest(version="1", image=NEW_IMAGE))
    # A re-run picks the release up where it was, without deploying again, and decides the pause.
    target.settings = target.settings.model_copy(update={"timeout_seconds": 1800})
    assert release(target, training, ReleaseRequest(strategy="canary")) == "2"
    assert [call[0] for call in helm.calls] == ["upgrade"]
    assert any(line.startswith("resuming the release of v2 (release.state=analysing") for line in lines)
    assert production(training) == "2"


def blue_green(auto_promotion: bool) -> dict[str, Any]:
    return {"blueGreen": {"autoPromotionEnabled": auto_promotion, "previewReplicaCount": 1}}


@pytest.mark.parametrize("auto_promotion", [False, True], ids=["promoted-by-the-loop", "auto-promotion"])
def test_good_blue_green_is_promoted(
    fake: FakeKube,
    training: TrainingSettings,
    tracks: tuple[Tracks, str],
    clock: ScaledClock,
    argo: FakeArgo,
    auto_promotion: bool,
) -> None:
    target, _, lines = start(fake, training, tracks, clock, argo, blue_green(auto_promotion))

    request = ReleaseRequest(strategy="blueGreen", provider="argo", image=NEW_IMAGE)
    assert release(target, training, request) == "2"

    assert production(training) == "2"
    [run] = runs(fake)
    assert run["metadata"]["labels"]["rollout-type"] == "PrePromotion"
    assert run["status"]["phase"] == "Successful"
    # Promoted by the loop only when Argo waits for a promotion, and only after the analysis.
    assert (status_patches(fake) != []) is (not auto_promotion)
    tags = version_tags(training, "2")
    assert len(tags["release.evidence.success-rate"].split(",")) == 4
    assert any(line.startswith("evidence: success-rate Successful: 4 ok") for line in lines), lines


@pytest.mark.parametrize("tracks", ["errors"], indirect=True)
def test_bad_blue_green_is_rejected_and_the_active_side_never_changes(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], clock: ScaledClock, argo: FakeArgo
) -> None:
    target, helm, _ = start(fake, training, tracks, clock, argo, blue_green(False))
    active = fake.objects[ROLLOUT]["status"]["blueGreen"]["activeSelector"]

    with pytest.raises(ReleaseRejectedError, match="assessed Failed due to failed"):
        release(target, training, ReleaseRequest(strategy="blueGreen", provider="argo", image=NEW_IMAGE))

    assert production(training) == "1"
    assert fake.objects[ROLLOUT]["status"]["blueGreen"]["activeSelector"] == active
    assert [call[0] for call in helm.calls] == ["upgrade", "rollback"]


def test_registry_and_cluster_disagreeing_stops_before_any_change(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], clock: ScaledClock, argo: FakeArgo
) -> None:
    target, helm, _ = start(fake, training, tracks, clock, argo, canary(DEFAULT_STEPS))
    helm.revisions[-1]["image"]["tag"] = "7-zzz"
    helm.revisions[-1]["model"]["version"] = "7"
    with pytest.raises(
        ReleaseError, match="the cluster serves v7 but production is v1: registry and cluster disagree"
    ):
        release(target, training, REQUEST)
    assert helm.calls == []
    assert "release.state" not in version_tags(training, "2")


def test_a_release_without_prometheus_stops_before_any_change(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], clock: ScaledClock, argo: FakeArgo
) -> None:
    target, helm, _ = start(fake, training, tracks, clock, argo, canary(DEFAULT_STEPS))
    target.settings = target.settings.model_copy(update={"prometheus_url": None})
    with pytest.raises(ReleaseError, match=r"reads its evidence from Prometheus: set --prometheus-url"):
        release(target, training, REQUEST)
    assert helm.calls == []


def test_a_release_whose_metrics_prometheus_does_not_scrape_stops_before_any_change(
    fake: FakeKube, training: TrainingSettings, tracks: tuple[Tracks, str], clock: ScaledClock, argo: FakeArgo
) -> None:
    target, helm, _ = start(fake, training, tracks, clock, argo, canary(DEFAULT_STEPS))
    helm.revisions[-1]["nameOverride"] = (
        "price"  # its metrics Service, and so the job, is tabula-price-metrics
    )
    with pytest.raises(
        ReleaseError,
        match=(
            r'no target up\{job="tabula-price-metrics", namespace="tabula"\} after 90s: the ServiceMonitor '
            r"is not selected; set the chart value monitoring.serviceMonitor.labels to "
            r"\{release: <your kube-prometheus-stack release>\}"
        ),
    ):
        release(target, training, REQUEST)
    assert helm.calls == []
