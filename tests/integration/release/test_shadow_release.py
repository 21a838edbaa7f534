"""The shadow stage of the release loop: a REAL MLflow registry, a REAL Prometheus scraping the service's
own metric code (``ServiceMetrics`` for the live tracks, ``ShadowComparison`` for the shadow's pairs) and
the fake Kubernetes API playing the Deployment controller on what the REAL ``helm template`` renders.

Traffic follows the cluster: the stable track always answers; the shadow pairs the stable's answers
with its own only while the chart's shadow Deployment exists (the mirror sends nowhere else); the canary
track answers live requests only while its Deployment exists. The loop's clock runs 60 times faster
than real time.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, start_http_server

from release.errors import ReleaseError, ReleaseRejectedError
from release.loop import ReleaseRequest, release
from service.metrics import ServiceMetrics
from service.shadow import CHAMPION_HEADER, ShadowComparison, ShadowMetrics
from tests.fakes.argo import FakeArgo
from tests.fakes.clock import ScaledClock
from tests.integration.release.conftest import (
    NAMESPACE,
    PREDICTIONS,
    cluster_with,
    production,
    serve,
    version_tags,
    wait_for_series,
)
from tests.support import free_port, prometheus_server
from tests.unit.release.fake_kube import FakeKube
from training.config import TrainingSettings

pytestmark = pytest.mark.integration

ROLLOUT = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/rollouts/tabula"
REPOSITORY = "localhost/tabula-service"
NEW_IMAGE = f"{REPOSITORY}:2-bbb"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/"
# Minutes of the fast clock are seconds of Prometheus: 5 "minutes" leave it five scrapes of new series.
ANALYSIS = {"interval": "1m", "count": 3, "initialDelay": "5m", "failureLimit": 0, "window": "30s"}
SHADOW = {
    "enabled": True,
    "sampleRate": 1.0,
    "minPairs": 200,
    "window": "30s",
    "interval": "1m",
    "count": 3,
    "initialDelay": "5m",
    "failureLimit": 0,
}
# The release command's budget, in seconds of the fast clock: two real minutes. Every real second the loop
# spends outside its sleeps (a `helm template`, an API call, on a loaded CI machine) costs it a fast
# minute, and a budget of 30 real seconds once ended a canary analysis after 2 of its 3 measurements.
BUDGET = 7200
SHIFT = 1.0  # $100k: far beyond rollout.shadow.maxAbsDifferenceP95
CLASSES = ("setosa", "versicolor", "virginica")
SWAPPED = {"versicolor": "virginica", "virginica": "versicolor"}  # a classifier that swaps two classes
SHADOW_THRESHOLD = 0.25  # the chart's default rollout.shadow.maxAbsDifferenceP95


@dataclass
class Fleet:
    """The exporters of the stable track (v1), the candidate's shadow and its canary track (v2)."""

    fake: FakeKube
    model_name: str
    shift: float | None  # the shadow's answers: the champion's plus this; None: class labels, two swapped
    live_sd: Path
    shadow_sd: Path
    exporters: dict[str, str] = field(default_factory=dict)
    argo_hashes: dict[str, str] = field(default_factory=dict)  # Argo: pod-template hash -> exporter role
    canary_requests: int = 0
    shadow_pairs: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def deployed(self, name: str) -> bool:
        return DEPLOYMENTS + name in self.fake.objects

    def play(self, stable: ServiceMetrics, canary: ServiceMetrics, shadow: ShadowComparison) -> None:
        for tick in itertools.count(1):
            if self.stop.wait(0.01):
                return
            answer = PREDICTIONS[tick % len(PREDICTIONS)]
            stable.observe_request("/predict", 200, 0.004)
            stable.observe_predictions("/predict", [answer])
            if self.deployed("tabula-shadow"):  # the stable pods mirror to it, after answering
                champion: float | str = answer if self.shift is not None else CLASSES[tick % len(CLASSES)]
                mine = (
                    champion + self.shift if isinstance(champion, float) else SWAPPED.get(champion, champion)
                )
                headers = {CHAMPION_HEADER: json.dumps([champion])}
                shadow.compare(headers.get, SimpleNamespace(prediction=mine))
                shadow.metrics.observe_request("/predict", 200, 0.005)
                self.shadow_pairs += 1
            if self.deployed("tabula-canary") or "canary" in self.argo_hashes.values():
                # The Service gives the canary's pods their share of live requests.
                canary.observe_request("/predict", 200, 0.004)
                canary.observe_predictions("/predict", [answer])
                self.canary_requests += 1

    def register_pod(self, pod_hash: str, image: str) -> None:
        """FakeArgo's on_replica_set: a ReplicaSet's pods serve the version of its image tag (Argo's
        target label is the pod-template hash, chart tabula.trackLabel)."""
        self.argo_hashes[pod_hash] = "stable" if image.endswith(":1-aaa") else "canary"
        groups = [
            {
                "targets": [self.exporters[role]],
                "labels": {"namespace": NAMESPACE, "rollouts_pod_template_hash": pod_hash},
            }
            for pod_hash, role in self.argo_hashes.items()
        ]
        replace(self.live_sd, groups)


def replace(path: Path, groups: list[dict[str, Any]]) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(groups))
    scratch.replace(path)  # atomically, so Prometheus never reads half a file


def write_targets(path: Path, tracks: dict[str, str]) -> None:
    """File-based discovery of the exporters (track -> address), labelled as the ServiceMonitor does."""
    groups = [
        {"targets": [address], "labels": {"namespace": NAMESPACE, "tabula_io_track": track}}
        for track, address in tracks.items()
    ]
    replace(path, groups)


@pytest.fixture
def fleet(
    request: pytest.FixtureRequest, fake: FakeKube, training: TrainingSettings, tmp_path: Path
) -> Iterator[tuple[Fleet, str]]:
    """Exporters, their traffic, and a Prometheus scraping them as the chart's ServiceMonitor asks: the
    serving pods under job ``tabula-metrics``, the shadow's under ``tabula-shadow-metrics``."""
    state = Fleet(
        fake,
        training.model_name,
        getattr(request, "param", 0.0),
        tmp_path / "live.json",
        tmp_path / "shadow.json",
    )
    registries = {role: CollectorRegistry() for role in ("stable", "canary", "shadow")}
    stable = ServiceMetrics(training.model_name, "1", "run-1", registries["stable"])
    canary = ServiceMetrics(training.model_name, "2", "run-2", registries["canary"])
    labels = {"model_name": training.model_name, "model_version": "2"}
    shadow = ShadowComparison(
        ShadowMetrics(labels, registries["shadow"]), logging.getLogger(__name__), log_pairs=False
    )
    servers = []
    for role, registry_ in registries.items():
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=registry_))
        state.exporters[role] = f"127.0.0.1:{port}"
    replace(state.live_sd, [])  # the live tracks' pods come with the workloads: see start()
    write_targets(state.shadow_sd, {"shadow": state.exporters["shadow"]})
    traffic = threading.Thread(target=state.play, args=(stable, canary, shadow), daemon=True)
    traffic.start()
    scrapes = [
        {"job_name": job, "file_sd_configs": [{"files": [str(sd)], "refresh_interval": "1s"}]}
        for job, sd in (("tabula-metrics", state.live_sd), ("tabula-shadow-metrics", state.shadow_sd))
    ]
    try:
        with prometheus_server(tmp_path / "prometheus", scrapes) as url:
            yield state, url
    finally:
        state.stop.set()
        traffic.join(5)
        for http_server, thread in servers:
            http_server.shutdown()
            thread.join(5)


def start(
    fleet: tuple[Fleet, str], training: TrainingSettings, task: str = "regression"
) -> tuple[Any, Any, list[str]]:
    """Native canary: the stable and canary tracks' pods are the Deployments' (tabula_io_track)."""
    state, prometheus = fleet
    exporters = state.exporters
    write_targets(state.live_sd, {"stable": exporters["stable"], "canary": exporters["canary"]})
    wait_for_series(prometheus, 'model_version="1"')
    lines: list[str] = []
    clock = ScaledClock(60)
    installed = {
        "image": {"repository": REPOSITORY, "tag": "1-aaa"},
        "model": {"name": training.model_name, "version": "1", "task": task},
        "rollout": {"strategy": "canary", "provider": "native", "analysis": ANALYSIS, "shadow": SHADOW},
    }
    target, helm = cluster_with(installed, lines, timeout=BUDGET, clock=clock, prometheus_url=prometheus)
    serve(state.fake, target, helm, clock)
    return target, helm, lines


def test_an_identical_challenger_passes_its_shadow_stage_and_goes_on_to_the_canary(
    fake: FakeKube, training: TrainingSettings, fleet: tuple[Fleet, str]
) -> None:
    state, _ = fleet
    target, helm, lines = start(fleet, training)
    request = ReleaseRequest(strategy="shadow+canary", provider="native", image=NEW_IMAGE)

    assert release(target, training, request) == "2"

    assert production(training) == "2"
    tags = version_tags(training, "2")
    assert (tags["release.state"], tags["release.shadow.result"]) == ("promoted", "passed")
    assert int(tags["release.shadow.pairs"]) >= SHADOW["minPairs"]
    assert len(tags["release.shadow.shadow-difference-p95"].split(",")) == 3
    assert int(tags["release.evidence.requests.candidate"]) >= 200  # the canary's own live evidence
    shadow_on, shadow_off, canary_on, promotion = (call[1] for call in helm.calls)
    assert shadow_on["rollout"]["shadow"] == {"tag": "2-bbb", "modelVersion": "2"}
    assert shadow_off["rollout"]["shadow"] == {"tag": "", "modelVersion": ""}
    assert canary_on["rollout"]["native"]["canary"] == {"tag": "2-bbb", "modelVersion": "2"}
    assert promotion["image"]["tag"] == "2-bbb"
    # The canary got its first live request only after the shadow stage had passed and was removed.
    assert lines.index("shadow stage passed: " + tags["release.shadow.pairs"] + " paired predictions") < (
        lines.index("going on with canary/native")
    )
    assert state.canary_requests > 0
    measured = [line for line in lines if line.startswith("analysis shadow-difference-p95 #")]
    assert len(measured) == 3, lines
    assert all("-> Successful" in line for line in measured), lines


@pytest.mark.parametrize("fleet", [SHIFT], indirect=True, ids=["shifted"])
def test_a_shifted_challenger_is_rejected_at_the_shadow_stage_before_any_live_request(
    fake: FakeKube, training: TrainingSettings, fleet: tuple[Fleet, str]
) -> None:
    state, _ = fleet
    target, helm, lines = start(fleet, training)
    request = ReleaseRequest(strategy="shadow+canary", provider="native", image=NEW_IMAGE)

    with pytest.raises(ReleaseRejectedError, match=r"shadow stage: .*shadow-difference-p95.* Failed"):
        release(target, training, request)

    assert production(training) == "1"
    tags = version_tags(training, "2")
    assert tags["release.state"] == "rejected"
    assert tags["release.shadow.result"].startswith("failed: ")
    first = float(tags["release.shadow.shadow-difference-p95"].split(",")[0].strip("[]"))
    assert first > SHADOW_THRESHOLD
    # The shadow answered, nobody saw it: no canary track ever existed, and the shadow is gone.
    assert [call[0] for call in helm.calls] == ["upgrade", "rollback"]
    assert state.shadow_pairs > 0
    assert state.canary_requests == 0
    assert not state.deployed("tabula-shadow")
    assert "production stays at v1" in lines


def test_a_shadow_only_release_stops_after_its_stage_and_production_stays(
    fake: FakeKube, training: TrainingSettings, fleet: tuple[Fleet, str]
) -> None:
    state, _ = fleet
    target, helm, lines = start(fleet, training)

    request = ReleaseRequest(strategy="shadow", provider="native", image=NEW_IMAGE)
    assert release(target, training, request) == "2"

    assert production(training) == "1"
    tags = version_tags(training, "2")
    assert (tags["release.state"], tags["release.shadow.result"]) == ("shadowed", "passed")
    assert [call[1]["rollout"]["shadow"]["tag"] for call in helm.calls] == ["2-bbb", ""]
    assert state.canary_requests == 0
    assert any(line.startswith("tagged v2 release.state=shadowed") for line in lines)


@pytest.mark.parametrize("fleet", [None], indirect=True, ids=["swapping-classes"])
def test_a_classifier_that_swaps_two_classes_is_rejected_at_the_shadow_stage(
    fake: FakeKube, training: TrainingSettings, fleet: tuple[Fleet, str]
) -> None:
    state, _ = fleet
    target, helm, _ = start(fleet, training, task="classification")
    request = ReleaseRequest(strategy="shadow", provider="native", image=NEW_IMAGE)

    with pytest.raises(ReleaseRejectedError, match=r"shadow stage: .*shadow-disagreement.* Failed"):
        release(target, training, request)

    tags = version_tags(training, "2")
    assert tags["release.state"] == "rejected"
    # Two of the three classes swapped: two thirds of the pairs disagree.
    rate = float(tags["release.shadow.shadow-disagreement"].split(",")[0].strip("[]"))
    assert rate == pytest.approx(2 / 3, abs=0.05)
    assert [call[0] for call in helm.calls] == ["upgrade", "rollback"]
    assert state.canary_requests == 0
    assert production(training) == "1"


def test_with_argo_the_shadow_runs_beside_the_rollout_and_the_canary_starts_only_after_it_passed(
    fake: FakeKube, training: TrainingSettings, fleet: tuple[Fleet, str]
) -> None:
    """Argo has no mirroring without a mesh: the shadow is the chart's own Deployment, which the loop
    manages beside the Rollout; the Rollout's pods (with the mirror control mounted) stay as they are
    until the live stage changes their image."""
    state, prometheus = fleet
    clock = ScaledClock(60)
    argo = FakeArgo(fake, clock, on_replica_set=state.register_pod)
    lines: list[str] = []
    # The canary's pods appear only once the shadow passed: its first measurement waits 15 s real, time
    # for Prometheus to discover and scrape them even on a loaded machine (5 s was too short once).
    analysis = ANALYSIS | {
        "prometheusAddress": prometheus,
        "count": 4,
        "initialDelay": "15m",
        "load": {"enabled": False},
    }
    # The analysis ends within the first pause (20 s real).
    steps = [
        {"setWeight": 20},
        {"pause": {"duration": "20m"}},
        {"setWeight": 50},
        {"pause": {"duration": "5m"}},
    ]
    installed = {
        "image": {"repository": REPOSITORY, "tag": "1-aaa"},
        "model": {"name": training.model_name, "version": "1"},
        "rollout": {
            "strategy": "canary",
            "provider": "argo",
            "analysis": analysis,
            "canary": {"steps": steps, "analysisStartingStep": 0},
            "shadow": SHADOW,
        },
    }
    # The shadow stage (8 fast-minutes) and the canary's steps (25) within the loop's budget.
    target, helm = cluster_with(installed, lines, timeout=BUDGET, clock=clock, prometheus_url=prometheus)
    serve(fake, target, helm, clock)
    argo.reconcile()
    argo.start()
    try:
        wait_for_series(prometheus, 'model_version="1"')
        stable_hash = fake.objects[ROLLOUT]["status"]["currentPodHash"]
        generations: list[int] = []
        applied = helm.on_change
        assert applied is not None

        def record(values: dict[str, Any]) -> None:
            applied(values)
            generations.append(fake.objects[ROLLOUT]["metadata"]["generation"])

        helm.on_change = record
        request = ReleaseRequest(strategy="shadow+canary", provider="argo", image=NEW_IMAGE)

        assert release(target, training, request) == "2", lines
    except (ReleaseError, ReleaseRejectedError) as error:
        raise AssertionError("\n".join(lines)) from error
    finally:
        argo.stop()

    assert production(training) == "2"
    tags = version_tags(training, "2")
    assert (tags["release.state"], tags["release.shadow.result"]) == ("promoted", "passed")
    assert tags["release.strategy"] == "shadow+canary/argo"
    assert tags["release.result"].startswith("Rollout tabula completed")
    # Starting and removing the shadow left the Rollout's spec alone (same generation, no new
    # ReplicaSet); only the live stage's image change made the canary ReplicaSet.
    assert generations[:2] == [generations[0], generations[0]]
    assert generations[2] == generations[0] + 1
    assert list(state.argo_hashes.values()) == ["stable", "canary"]
    assert next(iter(state.argo_hashes)) == stable_hash
    assert lines.index("going on with canary/argo") < next(
        index for index, line in enumerate(lines) if line.startswith("Rollout tabula Paused")
    )


def test_an_interrupted_release_resumes_after_its_passed_shadow_stage(
    fake: FakeKube, training: TrainingSettings, fleet: tuple[Fleet, str]
) -> None:
    """The shadow's judgement is recorded as soon as it is made: a re-run goes straight to the canary."""
    state, _ = fleet
    target, helm, lines = start(fleet, training)
    request = ReleaseRequest(strategy="shadow+canary", provider="native", image=NEW_IMAGE)

    def interrupt_at_the_live_stage(line: str) -> None:
        lines.append(line)
        if line.startswith("going on with "):
            raise KeyboardInterrupt

    target.log = interrupt_at_the_live_stage
    with pytest.raises(KeyboardInterrupt):
        release(target, training, request)
    tags = version_tags(training, "2")
    assert (tags["release.state"], tags["release.shadow.result"]) == ("analysing", "passed")
    assert state.canary_requests == 0

    target.log = lines.append
    assert release(target, training, request) == "2"

    assert production(training) == "2"
    assert "v2 passed its shadow stage before the interruption: resuming with canary" in lines
    # The shadow ran once: on, off, then the canary and its promotion.
    shadow_tags = [call[1]["rollout"].get("shadow", {}).get("tag") for call in helm.calls]
    assert shadow_tags == ["2-bbb", "", None, None]
