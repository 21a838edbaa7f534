"""The fake Argo Rollouts controller follows Argo v1.8.3's source: each test names the file it encodes.

Rollouts are driven through the REAL kubernetes client (the loop's :class:`release.rollouts.Rollouts`)
against the fake API server; AnalysisRuns query a REAL Prometheus (constant PromQL expressions such as
``vector(0.995)``, so no scrape timing is involved). Time is a manual clock moved step by step.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from release.kube import Kube
from release.rollouts import Rollouts
from tests.fakes.argo import EvaluationError, FakeArgo, evaluate, pod_template_hash
from tests.fakes.clock import ManualClock
from tests.support import prometheus_server
from tests.unit.release.fake_kube import FakeKube

pytestmark = pytest.mark.unit

API = "/apis/argoproj.io/v1alpha1/namespaces/tabula"
ROLLOUT = f"{API}/rollouts/tabula"
SELECTOR = {"app.kubernetes.io/name": "tabula"}
GOOD, BAD, EMPTY = "vector(0.995)", "vector(0.9)", "vector(1) > 2"


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with prometheus_server(tmp_path_factory.mktemp("prometheus"), []) as url:
        yield url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def argo(fake: FakeKube, clock: ManualClock) -> FakeArgo:
    return FakeArgo(fake, clock)


def template(image: str) -> dict[str, Any]:
    return {"metadata": {"labels": dict(SELECTOR)}, "spec": {"containers": [{"name": "s", "image": image}]}}


def install_template(fake: FakeKube, prometheus: str, query: str, **metric: Any) -> None:
    body = {
        "name": "success-rate",
        "successCondition": "result[0] >= 0.99",
        "interval": "1m",
        "count": 3,
        "provider": {"prometheus": {"address": prometheus, "query": query}},
    }
    fake.put(
        f"{API}/analysistemplates/tabula-analysis",
        {
            "kind": "AnalysisTemplate",
            "metadata": {"name": "tabula-analysis"},
            "spec": {"metrics": [body | metric]},
        },
    )


def canary(steps: list[dict[str, Any]], analysis: bool = False) -> dict[str, Any]:
    strategy: dict[str, Any] = {"steps": steps}
    if analysis:
        strategy["analysis"] = {
            "startingStep": 0,
            "templates": [{"templateName": "tabula-analysis"}],
            "args": [
                {"name": "candidate-track", "valueFrom": {"podTemplateHashValue": "Latest"}},
                {"name": "stable-track", "valueFrom": {"podTemplateHashValue": "Stable"}},
            ],
        }
    return {"canary": strategy}


def install(fake: FakeKube, argo: FakeArgo, strategy: dict[str, Any]) -> None:
    """A Rollout at v1, reconciled to Healthy (the initial deploy skips the steps), then updated to v2."""
    fake.put(
        ROLLOUT,
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "tabula", "namespace": "tabula", "generation": 1},
            "spec": {
                "selector": {"matchLabels": SELECTOR},
                "template": template("img:1"),
                "strategy": strategy,
            },
        },
    )
    argo.reconcile()
    assert fake.objects[ROLLOUT]["status"]["phase"] == "Healthy"
    rollout = fake.objects[ROLLOUT]
    rollout["spec"]["template"] = template("img:2")
    rollout["metadata"]["generation"] = 2


def status(fake: FakeKube) -> dict[str, Any]:
    result: dict[str, Any] = fake.objects[ROLLOUT]["status"]
    return result


def reconcile(argo: FakeArgo, times: int = 1) -> None:
    for _ in range(times):
        argo.reconcile()


def run_of(fake: FakeKube) -> dict[str, Any]:
    runs: list[dict[str, Any]] = [
        obj for path, obj in sorted(fake.objects.items()) if "/analysisruns/" in path
    ]
    return runs[-1]


def test_initial_deploy_is_healthy_and_a_new_template_starts_at_step_zero(
    fake: FakeKube, argo: FakeArgo
) -> None:
    """rollout/sync.go shouldFullPromote "Initial deploy"; canary.go syncRolloutStatusCanary reset."""
    install(fake, argo, canary([{"setWeight": 10}, {"pause": {}}]))
    v1 = pod_template_hash(template("img:1"))
    assert status(fake)["stableRS"] == v1
    reconcile(argo)
    assert status(fake)["currentStepIndex"] == 0
    assert status(fake)["currentPodHash"] == pod_template_hash(template("img:2"))
    assert status(fake)["phase"] == "Progressing"
    reconcile(argo)
    assert status(fake)["currentStepIndex"] == 1  # setWeight done


def test_an_untimed_pause_holds_until_its_condition_is_cleared(
    fake: FakeKube, argo: FakeArgo, clock: ManualClock, kube: Kube
) -> None:
    """rollout/canary.go reconcileCanaryPause; rollout/pause.go CompletedCanaryPauseStep; promote.go."""
    install(fake, argo, canary([{"pause": {}}, {"setWeight": 50}]))
    reconcile(argo, 2)
    [condition] = status(fake)["pauseConditions"]
    assert condition == {"reason": "CanaryPauseStep", "startTime": clock.iso()}
    assert status(fake)["controllerPause"] is True
    assert status(fake)["phase"] == "Paused"
    clock.advance(86_400)
    reconcile(argo, 3)
    assert status(fake)["currentStepIndex"] == 0
    Rollouts(kube).promote("tabula", full=False)  # pauseConditions: null, as the kubectl plugin sends
    reconcile(argo)
    assert status(fake)["currentStepIndex"] == 1
    assert "pauseConditions" not in status(fake)
    assert argo.pauses[-1].ended_by == "promote"
    # The controller does not pause the same step again once it was unpaused.
    reconcile(argo, 2)
    assert status(fake)["phase"] == "Healthy"


def test_a_timed_pause_completes_only_after_its_duration(
    fake: FakeKube, argo: FakeArgo, clock: ManualClock
) -> None:
    """rollout/pause.go CompletedCanaryPauseStep: startTime + duration must have passed."""
    install(fake, argo, canary([{"pause": {"duration": "2m"}}, {"setWeight": 50}]))
    reconcile(argo, 2)
    assert status(fake)["pauseConditions"][0]["reason"] == "CanaryPauseStep"
    clock.advance(119)
    reconcile(argo)
    assert status(fake)["currentStepIndex"] == 0
    clock.advance(2)
    reconcile(argo)
    assert status(fake)["currentStepIndex"] == 1
    [pause] = argo.pauses
    assert pause.ended is not None
    assert pause.ended - pause.started >= 120
    assert pause.ended_by == "duration"


def test_clearing_a_timed_pause_completes_it_at_once(
    fake: FakeKube, argo: FakeArgo, clock: ManualClock, kube: Kube
) -> None:
    """rollout/pause.go CompletedCanaryPauseStep: controllerPause and no condition -> completed, duration
    or not. This is why the release loop must never promote a timed pause."""
    install(fake, argo, canary([{"pause": {"duration": "3m"}}, {"setWeight": 50}]))
    reconcile(argo, 2)
    clock.advance(5)
    Rollouts(kube).promote("tabula", full=False)
    reconcile(argo)
    assert status(fake)["currentStepIndex"] == 1
    assert argo.pauses[-1].ended is not None
    assert argo.pauses[-1].ended - argo.pauses[-1].started < 180


def test_promote_full_skips_every_step(fake: FakeKube, argo: FakeArgo, kube: Kube) -> None:
    """canary.go syncRolloutStatusCanary (promoteFull) and sync.go promoteStable; promote.go --full."""
    install(fake, argo, canary([{"pause": {}}, {"pause": {"duration": "1h"}}]))
    reconcile(argo, 2)
    Rollouts(kube).promote("tabula", full=True)
    assert status(fake)["promoteFull"] is True
    reconcile(argo)
    assert status(fake)["stableRS"] == status(fake)["currentPodHash"]
    assert status(fake)["currentStepIndex"] == 2
    assert "promoteFull" not in status(fake)
    assert status(fake)["phase"] == "Healthy"


def test_abort_goes_back_to_step_zero_and_retry_resumes(fake: FakeKube, argo: FakeArgo, kube: Kube) -> None:
    """canary.go syncRolloutStatusCanary (aborted: currentStepIndex 0); cmd/abort/abort.go,
    cmd/retry/retry.go (status.abort true / false)."""
    install(fake, argo, canary([{"setWeight": 10}, {"pause": {}}]))
    reconcile(argo, 3)
    assert status(fake)["currentStepIndex"] == 1
    Rollouts(kube).abort("tabula")
    reconcile(argo)
    assert (status(fake)["currentStepIndex"], status(fake)["phase"]) == (0, "Degraded")
    assert status(fake)["stableRS"] == pod_template_hash(template("img:1"))
    Rollouts(kube).retry("tabula")
    reconcile(argo, 2)
    assert status(fake)["phase"] == "Paused"
    assert "abort" not in status(fake)


def test_going_back_to_the_stable_template_skips_the_steps(fake: FakeKube, argo: FakeArgo) -> None:
    """canary.go syncRolloutStatusCanary: "Rollback to stable ReplicaSets" sets the last step."""
    install(fake, argo, canary([{"setWeight": 10}, {"pause": {}}]))
    reconcile(argo, 3)
    fake.objects[ROLLOUT]["spec"]["template"] = template("img:1")
    reconcile(argo, 2)
    assert status(fake)["currentStepIndex"] == 2
    assert status(fake)["phase"] == "Healthy"


def test_background_analysis_measures_on_schedule_and_succeeds_at_count(
    fake: FakeKube, argo: FakeArgo, clock: ManualClock, prometheus: str
) -> None:
    """analysis/analysis.go generateMetricTasks (initialDelay, interval, count), assessMetricStatus;
    metricproviders/prometheus/prometheus.go (vector values as ``[v]``); rollout/analysis.go
    (background run from startingStep, args from podTemplateHashValue)."""
    install_template(fake, prometheus, GOOD, initialDelay="30s")
    install(fake, argo, canary([{"pause": {}}], analysis=True))
    reconcile(argo, 3)
    run = run_of(fake)
    assert run["metadata"]["labels"]["rollout-type"] == "Background"
    assert run["spec"]["args"] == [
        {"name": "candidate-track", "value": pod_template_hash(template("img:2"))},
        {"name": "stable-track", "value": pod_template_hash(template("img:1"))},
    ]
    assert run["status"]["metricResults"] == []  # initialDelay not over
    clock.advance(31)
    reconcile(argo)
    [result] = run_of(fake)["status"]["metricResults"]
    assert (result["count"], result["successful"], result["measurements"][0]["value"]) == (1, 1, "[0.995]")
    clock.advance(30)
    reconcile(argo)
    assert run_of(fake)["status"]["metricResults"][0]["count"] == 1  # interval 1m not over
    for _ in range(2):
        clock.advance(61)
        reconcile(argo)
    assert run_of(fake)["status"]["phase"] == "Successful"
    assert run_of(fake)["status"]["metricResults"][0]["successful"] == 3


def test_a_failed_measurement_over_failure_limit_fails_the_run_and_aborts(
    fake: FakeKube, argo: FakeArgo, prometheus: str
) -> None:
    """analysis.go assessMetricFailureInconclusiveOrError (failureLimit default 0);
    rollout/analysis.go reconcileBackgroundAnalysisRun: a Failed run aborts the rollout."""
    install_template(fake, prometheus, BAD)
    install(fake, argo, canary([{"pause": {}}], analysis=True))
    reconcile(argo, 4)
    run = run_of(fake)
    assert run["status"]["phase"] == "Failed"
    assert (
        run["status"]["message"]
        == 'Metric "success-rate" assessed Failed due to failed (1) > failureLimit (0)'
    )
    assert status(fake)["abort"] is True
    assert status(fake)["phase"] == "Degraded"
    assert "assessed Failed" in status(fake)["message"]


def test_an_empty_result_errs_until_the_consecutive_error_limit(
    fake: FakeKube, argo: FakeArgo, clock: ManualClock, prometheus: str
) -> None:
    """utils/evaluate/evaluate.go: result[0] of an empty vector is an evaluation error -> Error;
    analysis.go: errors do not count, are retried after 10 s, and consecutiveErrors (5) >
    consecutiveErrorLimit (4, utils/defaults/defaults.go) ends the metric and the run as Error."""
    install_template(fake, prometheus, EMPTY)
    install(fake, argo, canary([{"pause": {}}], analysis=True))
    reconcile(argo, 3)
    for _ in range(4):
        clock.advance(11)
        reconcile(argo)
    result = run_of(fake)["status"]["metricResults"][0]
    assert (result["error"], result["count"], result["phase"]) == (5, 0, "Error")
    assert result["measurements"][0]["value"] == "[]"
    assert run_of(fake)["status"]["phase"] == "Error"
    assert run_of(fake)["status"]["message"] == (
        'Metric "success-rate" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4)'
    )
    reconcile(argo)
    assert status(fake)["abort"] is True


def test_a_run_cancelled_before_its_first_measurement_is_successful(
    fake: FakeKube, argo: FakeArgo, clock: ManualClock, prometheus: str
) -> None:
    """rollout/analysis.go: the background run of a fully promoted rollout is cancelled
    (spec.terminate); analysis.go assessRunStatus: terminated with no measurement -> Successful."""
    install_template(fake, prometheus, GOOD, initialDelay="30s")
    install(fake, argo, canary([{"setWeight": 50}, {"pause": {"duration": "10s"}}], analysis=True))
    reconcile(argo, 3)
    clock.advance(11)
    reconcile(argo, 4)
    assert status(fake)["phase"] == "Healthy"
    run = run_of(fake)
    assert run["spec"]["terminate"] is True
    assert (run["status"]["phase"], run["status"]["metricResults"]) == ("Successful", [])
    assert run["status"]["message"] == "Run Terminated"


def test_neither_condition_met_is_inconclusive_and_pauses_the_rollout(
    fake: FakeKube, argo: FakeArgo, prometheus: str
) -> None:
    """utils/evaluate/evaluate.go: neither success nor failure condition -> Inconclusive; analysis.go:
    inconclusive (1) > inconclusiveLimit (0); rollout/analysis.go: an Inconclusive run pauses the
    rollout with InconclusiveAnalysis instead of aborting it."""
    install_template(fake, prometheus, "vector(0.7)", failureCondition="result[0] < 0.5")
    install(fake, argo, canary([{"setWeight": 10}, {"pause": {"duration": "1h"}}], analysis=True))
    reconcile(argo, 4)
    run = run_of(fake)
    assert run["status"]["phase"] == "Inconclusive"
    assert run["status"]["message"] == (
        'Metric "success-rate" assessed Inconclusive due to inconclusive (1) > inconclusiveLimit (0)'
    )
    assert "InconclusiveAnalysis" in [c["reason"] for c in status(fake)["pauseConditions"]]
    assert "abort" not in status(fake)


def test_condition_evaluation() -> None:
    """utils/evaluate/evaluate.go via expr: NaN compares false; indexing an empty result raises."""
    assert evaluate("result[0] >= 0.99", [0.995])
    assert not evaluate("result[0] >= 0.99", [float("nan")])
    assert evaluate("len(result) > 0 && result[0] <= 1", [0.5])
    with pytest.raises(EvaluationError):
        evaluate("result[0] >= 0.99", [])


def blue_green(auto: bool, seconds: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "activeService": "tabula",
        "previewService": "tabula-preview",
        "autoPromotionEnabled": auto,
        "prePromotionAnalysis": copy.deepcopy(canary([], analysis=True)["canary"]["analysis"]),
    }
    spec["prePromotionAnalysis"].pop("startingStep")
    if seconds:
        spec["autoPromotionSeconds"] = seconds
    return {"blueGreen": spec}


def test_blue_green_pauses_only_after_the_pre_promotion_analysis_and_waits_for_a_promotion(
    fake: FakeKube, argo: FakeArgo, clock: ManualClock, prometheus: str, kube: Kube
) -> None:
    """rollout/bluegreen.go reconcileBlueGreenPause ("not ready for pause: prePromotionAnalysis
    incomplete"); pause.go CompletedBlueGreenPause with autoPromotionEnabled false."""
    install_template(fake, prometheus, GOOD, count=2)
    install(fake, argo, blue_green(auto=False))
    reconcile(argo, 3)
    assert run_of(fake)["metadata"]["labels"]["rollout-type"] == "PrePromotion"
    assert "pauseConditions" not in status(fake)
    clock.advance(61)
    reconcile(argo, 2)
    assert run_of(fake)["status"]["phase"] == "Successful"
    assert status(fake)["pauseConditions"][0]["reason"] == "BlueGreenPause"
    clock.advance(86_400)
    reconcile(argo, 2)
    assert (
        status(fake)["blueGreen"]["activeSelector"]
        == status(fake)["stableRS"]
        != status(fake)["currentPodHash"]
    )
    Rollouts(kube).promote("tabula", full=False)
    reconcile(argo, 2)
    assert (
        status(fake)["blueGreen"]["activeSelector"]
        == status(fake)["currentPodHash"]
        == status(fake)["stableRS"]
    )
    assert status(fake)["phase"] == "Healthy"


def test_blue_green_auto_promotion_switches_after_the_analysis_and_its_delay(
    fake: FakeKube, argo: FakeArgo, clock: ManualClock, prometheus: str
) -> None:
    """pause.go CompletedBlueGreenPause: autoPromotionEnabled with autoPromotionSeconds waits that long."""
    install_template(fake, prometheus, GOOD, count=1)
    install(fake, argo, blue_green(auto=True, seconds=60))
    reconcile(argo, 4)
    assert status(fake)["pauseConditions"][0]["reason"] == "BlueGreenPause"
    clock.advance(30)
    reconcile(argo)
    assert status(fake)["phase"] == "Paused"
    clock.advance(31)
    reconcile(argo, 2)
    assert status(fake)["phase"] == "Healthy"
    assert argo.pauses[-1].ended_by == "autoPromotionSeconds"


def test_blue_green_failed_pre_promotion_analysis_aborts(
    fake: FakeKube, argo: FakeArgo, prometheus: str
) -> None:
    """rollout/analysis.go setPauseOrAbort: a Failed pre-promotion run aborts; the active side stays."""
    install_template(fake, prometheus, BAD)
    install(fake, argo, blue_green(auto=False))
    reconcile(argo, 4)
    assert status(fake)["abort"] is True
    assert status(fake)["blueGreen"]["activeSelector"] == pod_template_hash(template("img:1"))
