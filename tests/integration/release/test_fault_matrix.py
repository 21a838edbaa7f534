"""Issue 9's fault matrix, end to end: the release loop (release/loop.py) against REAL tracks.

Real parts: `bentoml serve` of Bentos built by `tabula build` from versions in a real MLflow registry
(one stable process shared by every case, one candidate process per case with its fault), a real
Prometheus scraping them with the target labels the chart's ServiceMonitor gives the pods, the chart's
analysis as `helm template` renders it (ConfigMap `<fullname>-analysis`), and the registry's
`production` alias. Stand-ins: the fake Kubernetes API (tests/unit/release/fake_kube.py) playing the
Deployment controller for native releases (tests/fakes/cluster.py) and the fake Argo Rollouts v1.8.3
controller (tests/fakes/argo.py) for Argo ones, with a kubelet that writes the real processes'
readiness into the pods (tests/integration/release/fleet.py). The chart's in-cluster load Job cannot
run without a cluster: a traffic generator plays it at the chart's `rollout.analysis.load` rate
against the candidate track, and users' traffic goes to stable.

Cases: a candidate that (a) raises on part of its requests, (b) is slow past the latency SLO,
(c) predicts shifted values, (d) never becomes ready, (e) crash-loops, (f) gets no traffic,
(g) is the stable model version rebuilt with a fault (both tracks carry the same `model_version`
label: only the pods' track label tells them apart); and a good one. All eight on native canary and
Argo canary; good, shifted, no traffic and erroring on native and Argo blue/green.

Figures: one JSON per case in RESULTS_DIR (tests/integration/reliability/harness.py) and the table as
RESULTS_DIR/fault_matrix_<provider>.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from release.config import ReleaseSettings
from release.errors import ReleaseRejectedError
from release.helm import Helm
from release.loop import ReleaseRequest, release
from tests.fakes.argo import HASH_LABEL, FakeArgo
from tests.fakes.clock import ScaledClock
from tests.integration.release.conftest import NAMESPACE, cluster_with, serve
from tests.integration.release.fleet import (
    Bentos,
    Kubelet,
    ReadinessProbe,
    Scrape,
    Targets,
    Traffic,
    build_bentos,
    serve_bento,
)
from tests.integration.reliability.harness import MODEL_NAME, RESULTS_DIR, record_figures
from tests.support import Server, prometheus_server, stop_server, wait_ready
from tests.unit.release.fake_helm import CHART_DEFAULTS
from tests.unit.release.fake_kube import FakeKube
from training import registry
from training.config import TrainingSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPOSITORY = "localhost/tabula-service"
STABLE_TAG = "1-aaa"
NATIVE_TRACK = "tabula.io/track"
WINDOW_SECONDS = 6.0
# Three measurements two seconds apart over a 6 s window that the candidate fills before the first
# (a window longer than its data would compare it with rows stable got alone); none may fail;
# 15 candidate requests.
ANALYSIS: dict[str, Any] = {
    "interval": "2s",
    "count": 3,
    # A new pod's target is discovered (1 s) and scraped twice (2 s apart) before the first measurement.
    "initialDelay": "10s",
    "failureLimit": 0,
    "consecutiveErrorLimit": 2,
    "window": f"{WINDOW_SECONDS:.0f}s",
    "minRequests": 15,
    "minMeasurements": 3,
    # About 30 predictions per track fall in a 6 s window: two samples of one distribution then differ
    # by up to about 0.35 in KS distance (the 95 % critical value 1.36 * sqrt(2 / 30)). The chart's 0.2
    # is sized for minutes of traffic; here 0.5, and the shifted fault is large enough to clear it.
    "predictionShift": {"maxDistance": 0.5},
}
LOAD = CHART_DEFAULTS["rollout"]["analysis"]["load"]
LOAD_RATE, LOAD_USERS = float(LOAD["requestsPerSecond"]), int(LOAD["users"])
# The kubelet probes once a second (the chart's default is every 5 s), the chart's threshold and timeout.
READINESS = CHART_DEFAULTS["probes"]["readiness"] | {"periodSeconds": 1}
# Scrapes every 2 s (the chart's default is 15 s): a slow candidate's /metrics still answers in time.
SCRAPE = "2s"
USER_RATE = 5.0  # users of the stable track
SCALE_DOWN_DELAY_SECONDS = 3
TIMEOUT = 30.0  # seconds the loop may take per release


@dataclass(frozen=True)
class Case:
    """A candidate: which Bento it serves, its faults, and what must reject it (None: promoted)."""

    bento: str
    faults: dict[str, str] = field(default_factory=dict)
    rejected_by: str | None = None
    traffic: bool = True
    settings: dict[str, str] = field(default_factory=dict)  # the candidate's service settings (env)


CASES = {
    "good": Case("candidate"),
    "erroring": Case("candidate", {"raise_rate": "0.2"}, "success-rate"),  # 1 call in 5 raises: 500
    # SLO: p95 <= 0.25 s. Its requests take longer than the admission target (0.1 s), so with the
    # default wait a request that overlaps another is refused, and success-rate may reject it first:
    # a longer wait keeps this case about latency alone.
    "slow": Case(
        "candidate",
        {"delay_seconds": "0.3"},
        "latency-p95",
        settings={
            "TABULA_SERVICE_ADMISSION_WAIT_SECONDS": "2",
            "TABULA_SERVICE_ADMISSION_REFUSAL_SECONDS": "2",
        },
    ),
    "shifted": Case("candidate", {"shift": "3.0"}, "prediction-shift"),  # +$300k on every prediction
    "never-ready": Case("candidate", {"never_ready": "1"}, "no pod of the candidate track"),
    # The worker exits after 10 predictions and BentoML starts another, which loads the model for
    # seconds: the evidence rule catches it (no series left, no Ready pod, or too few requests).
    "crash-loop": Case("candidate", {"crash_after": "10"}, "no evidence: "),
    "no-traffic": Case("candidate", rejected_by="Prometheus has no request series", traffic=False),
    "same-version": Case("stable", {"raise_rate": "0.2"}, "success-rate"),
}
METRICS = ("success-rate", "latency-p95", "prediction-shift")  # the chart's analysis metrics
FULL = list(CASES)
SUBSET = ["good", "shifted", "no-traffic", "erroring"]
# In order of provider: each provider's cases run on one xdist worker (its own stable server and
# Prometheus), the two providers side by side.
COMBOS = [
    ("native", "canary", FULL),
    ("native", "blueGreen", SUBSET),
    ("argo", "canary", FULL),
    ("argo", "blueGreen", SUBSET),
]
TABLE: list[dict[str, Any]] = []
# When the last native candidate stopped: its samples must leave the analysis window first.
LAST_CANDIDATE_STOPPED = [0.0]


def params() -> list[Any]:
    found = []
    for provider, strategy, cases in COMBOS:
        for case in cases:
            group = pytest.mark.xdist_group(f"fault-matrix-{provider}")
            name = f"{provider}-{strategy}-{case}"
            found.append(pytest.param(provider, strategy, case, id=name, marks=group))
    return found


def training_of(bentos: Bentos) -> TrainingSettings:
    return TrainingSettings(MLFLOW_TRACKING_URI=bentos.versions.tracking_uri, model_name=MODEL_NAME)


@pytest.fixture(scope="module")
def bentos(tmp_path_factory: pytest.TempPathFactory) -> Bentos:
    """v1 (production) and v2 of one model (same data, same seed), each built into a Bento."""
    return build_bentos(tmp_path_factory.mktemp("fault-matrix"), {"stable": 0.0, "candidate": 0.0})


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fault-matrix-logs")


@pytest.fixture(scope="module")
def stable(bentos: Bentos, logs: Path) -> Iterator[Server]:
    """The stable version's process, shared by every case."""
    server = serve_bento(bentos.tags["stable"], bentos.home, logs / "stable.log", {})
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)


def rendered(bentos: Bentos, values: dict[str, Any]) -> list[dict[str, Any]]:
    settings = ReleaseSettings(namespace=NAMESPACE)
    return Helm.from_settings(settings).template(settings.release_name, settings.chart, values, [], {})


@pytest.fixture(scope="module")
def scrape(bentos: Bentos) -> Scrape:
    """The ServiceMonitor's scrape; job and namespace are the same for both providers."""
    scrapes = {
        provider: Scrape.of_chart(rendered(bentos, installed(provider, "canary", "")))
        for provider in ("native", "argo")
    }
    assert scrapes["native"].track_label == "tabula_io_track"
    assert scrapes["argo"].track_label == "rollouts_pod_template_hash"
    assert (scrapes["native"].job, scrapes["native"].namespace) == (
        scrapes["argo"].job,
        scrapes["argo"].namespace,
    )
    return scrapes["native"]


@pytest.fixture(scope="module")
def prometheus(scrape: Scrape, logs: Path) -> Iterator[tuple[str, Targets]]:
    targets = Targets(logs / "targets.json", scrape.namespace)
    with prometheus_server(logs / "prometheus", [scrape.config(targets.sd_file)]) as url:
        yield url, targets


def installed(provider: str, strategy: str, prometheus: str) -> dict[str, Any]:
    """v1 served as ``strategy``/``provider`` with the short analysis; Argo: a manual pause to decide."""
    analysis = dict(ANALYSIS)
    rollout: dict[str, Any] = {"strategy": strategy, "provider": provider, "analysis": analysis}
    if provider == "argo":
        analysis["prometheusAddress"] = prometheus or "http://127.0.0.1:9090"
        # The fake controller runs no Job-provider metric: the test's traffic generator is the load.
        analysis["load"] = {"enabled": False}
        if strategy == "canary":
            rollout["canary"] = {"steps": [{"setWeight": 50}, {"pause": {}}], "analysisStartingStep": 0}
        else:
            rollout["blueGreen"] = {"autoPromotionEnabled": False, "previewReplicaCount": 1}
    elif strategy == "blueGreen":
        # The old colour's scale-down still follows the switch, after seconds instead of the chart's 60.
        rollout["native"] = {"blueGreen": {"scaleDownDelaySeconds": SCALE_DOWN_DELAY_SECONDS}}
    return {
        "image": {"repository": REPOSITORY, "tag": STABLE_TAG},
        "model": {"name": MODEL_NAME, "version": "1"},
        "rollout": rollout,
        "probes": {"readiness": READINESS},
        "monitoring": {"serviceMonitor": {"interval": SCRAPE, "scrapeTimeout": SCRAPE}},
    }


@dataclass
class Stage:
    """One case's running parts: the candidate process, the kubelet, the traffic."""

    candidate: Server
    kubelet: Kubelet
    traffic: dict[str, Traffic] = field(default_factory=dict)
    selectors: dict[str, str] = field(default_factory=dict)  # role -> its track, as Prometheus has it


class Candidates:
    """Candidate processes started one case ahead: the next case's model loads while this case runs."""

    def __init__(self, bentos: Bentos, logs: Path) -> None:
        self.bentos, self.logs = bentos, logs
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.started: dict[str, Future[Server]] = {}

    def prepare(self, name: str) -> None:
        if name not in self.started:
            spec = CASES[name.rsplit("/", 1)[1]]
            log = self.logs / f"{name.replace('/', '-')}.log"
            bento = self.bentos.tags[spec.bento]
            self.started[name] = self.pool.submit(
                serve_bento, bento, self.bentos.home, log, spec.faults, spec.settings
            )

    def take(self, name: str) -> Server:
        self.prepare(name)
        return self.started.pop(name).result()

    def close(self) -> None:
        for future in self.started.values():
            stop_server(future.result())
        self.pool.shutdown()


@pytest.fixture(scope="module")
def candidates(bentos: Bentos, logs: Path) -> Iterator[Candidates]:
    started = Candidates(bentos, logs)
    try:
        yield started
    finally:
        started.close()


def next_case(request: pytest.FixtureRequest) -> str | None:
    """The name (provider/strategy/case) of the next selected case of this matrix on this worker."""
    items = request.session.items
    index = items.index(request.node)
    following = items[index + 1] if index + 1 < len(items) else None
    callspec = getattr(following, "callspec", None)
    if following is None or callspec is None or following.path != request.node.path:
        return None
    if callspec.params["provider"] != request.node.callspec.params["provider"]:
        return None  # the other provider's group runs on another worker
    return "/".join(str(callspec.params[key]) for key in ("provider", "strategy", "case"))


@pytest.mark.parametrize(("provider", "strategy", "case"), params())
def test_fault_matrix(
    request: pytest.FixtureRequest,
    fake: FakeKube,
    bentos: Bentos,
    stable: Server,
    prometheus: tuple[str, Targets],
    scrape: Scrape,
    candidates: Candidates,
    provider: str,
    strategy: str,
    case: str,
) -> None:
    url, targets = prometheus
    spec = CASES[case]
    training = training_of(bentos)
    client = registry.connect(training)
    stable_version, candidate_version = (
        bentos.versions.versions["stable"],
        bentos.versions.versions["candidate"],
    )
    # Each case starts from v1 in production and v2 never released, whatever an earlier case did.
    client.set_registered_model_alias(MODEL_NAME, registry.PRODUCTION, stable_version)
    for key in registry.get_version(client, MODEL_NAME, candidate_version).tags or {}:
        if key.startswith("release."):
            client.delete_model_version_tag(MODEL_NAME, candidate_version, key)
    # A tag of its own per case: a new pod template, so a new pod-template hash for Argo.
    image = f"{REPOSITORY}:2-{provider[:2]}{strategy[:2].lower()}{case.replace('-', '')}"
    clock = ScaledClock(1.0)
    candidate = candidates.take(f"{provider}/{strategy}/{case}")
    if (following := next_case(request)) is not None:
        candidates.prepare(following)
    kubelet = Kubelet(fake, clock, NAMESPACE, ReadinessProbe.of_values(READINESS))
    stage = Stage(candidate, kubelet)
    argo: FakeArgo | None = None
    lines: list[str] = []
    target, helm = cluster_with(
        installed(provider, strategy, url), lines, timeout=TIMEOUT, clock=clock, prometheus_url=url
    )
    target.settings = target.settings.model_copy(update={"poll_seconds": 0.5})
    added: list[tuple[str, str]] = []

    def place(label: str, value: str, server: Server) -> None:
        """Pods of track ``value`` run in ``server``: probed; once one exists, scraped and loaded."""
        role = "candidate" if server is candidate else "stable"

        def on_pod() -> None:
            prom_label = re.sub(r"[^a-zA-Z0-9_]", "_", label)  # the operator's sanitizeLabelName
            targets.add(prom_label, value, server)
            added.append((prom_label, value))
            stage.selectors[role] = f'{prom_label}="{value}"'
            if role in stage.traffic or (role == "candidate" and not spec.traffic):
                return
            rate, users = (LOAD_RATE, LOAD_USERS) if role == "candidate" else (USER_RATE, 1)
            receiving = partial(kubelet.is_ready, label, value)
            stage.traffic[role] = Traffic(server.base_url, rate, receiving, users).start()

        kubelet.bind(label, value, server, on_pod)

    try:
        if spec.faults.get("never_ready") != "1":
            wait_ready(candidate)
        if provider == "native":
            # Native track names repeat from case to case, and the queries look back over the
            # analysis window: the last candidate's samples must age out (Argo's hashes are new).
            time.sleep(max(0.0, LAST_CANDIDATE_STOPPED[0] + WINDOW_SECONDS - time.monotonic()))
        kubelet.start()
        if provider == "native":
            stable_track, candidate_track = (
                ("stable", "canary") if strategy == "canary" else ("blue", "green")
            )
            place(NATIVE_TRACK, stable_track, stable)
            place(NATIVE_TRACK, candidate_track, candidate)
            serve(fake, target, helm, clock)
        else:

            def on_replica_set(pod_hash: str, pod_image: str) -> None:
                place(HASH_LABEL, pod_hash, stable if pod_image.endswith(f":{STABLE_TAG}") else candidate)

            argo = FakeArgo(fake, clock, on_replica_set=on_replica_set)
            serve(fake, target, helm, clock)
            argo.reconcile()
            argo.start()
        wait_scraped(url, scrape, stage)
        outcome = run_release(target, training, client, provider, strategy, image)
        row = figures(provider, strategy, case, outcome, stage, client, candidate_version, lines)
        TABLE.append(row)
        record_figures(f"fault_matrix_{provider}_{strategy}_{case}", row | {"lines": lines})
        write_table()
        check(outcome, spec, client, candidate_version, stable_version, helm.calls)
        if spec.rejected_by is None or spec.rejected_by in METRICS:
            # The candidate's series carry the model version it serves: v1 for the rebuilt stable
            # version, so only the pods' track label told the two tracks apart.
            served = bentos.versions.versions[spec.bento]
            assert served_versions(url, stage.selectors["candidate"]) == {served}, stage.selectors
    finally:
        if argo is not None:
            argo.stop()
        for generator in stage.traffic.values():
            generator.stop()
        kubelet.stop()
        for label, value in added:
            targets.remove(label, value)
        stop_server(candidate)
        if provider == "native":
            LAST_CANDIDATE_STOPPED[0] = time.monotonic()


@dataclass
class Outcome:
    error: Exception | None
    started: float  # monotonic
    real_seconds: float
    clock_seconds: float
    production: str


def run_release(
    target: Any, training: TrainingSettings, client: Any, provider: str, strategy: str, image: str
) -> Outcome:
    request = ReleaseRequest(version="2", strategy=strategy, provider=provider, image=image, retry=True)
    started, clock_started = time.monotonic(), target.clock.now()
    error: Exception | None = None
    try:
        release(target, training, request)
    except ReleaseRejectedError as exc:  # a timeout is no verdict: it fails the test
        error = exc
    found = registry.alias_version(client, MODEL_NAME, registry.PRODUCTION)
    assert found is not None
    return Outcome(
        error, started, time.monotonic() - started, target.clock.now() - clock_started, str(found.version)
    )


def check(outcome: Outcome, spec: Case, client: Any, candidate: str, stable: str, calls: list[Any]) -> None:
    tags = dict(registry.get_version(client, MODEL_NAME, candidate).tags or {})
    if spec.rejected_by is None:
        assert outcome.error is None
        assert outcome.production == candidate
        assert tags["release.state"] == "promoted"
        assert int(tags["release.evidence.requests.candidate"]) >= ANALYSIS["minRequests"]
        for metric in METRICS:
            assert len(tags[f"release.evidence.{metric}"].split(",")) >= ANALYSIS["minMeasurements"], tags
        return
    assert isinstance(outcome.error, ReleaseRejectedError), outcome.error
    assert outcome.error.exit_code == 5
    assert spec.rejected_by in str(outcome.error), str(outcome.error)
    assert outcome.production == stable
    assert tags["release.state"] == "rejected"
    assert spec.rejected_by in tags["release.reason"]
    assert [call[0] for call in calls][-1] == "rollback"


def figures(
    provider: str,
    strategy: str,
    case: str,
    outcome: Outcome,
    stage: Stage,
    client: Any,
    candidate: str,
    lines: list[str],
) -> dict[str, Any]:
    tags = dict(registry.get_version(client, MODEL_NAME, candidate).tags or {})
    return {
        "provider": provider,
        "strategy": strategy,
        "case": case,
        "faults": CASES[case].faults,
        "verdict": "promoted" if outcome.error is None else str(outcome.error),
        "real_seconds": round(outcome.real_seconds, 1),
        "clock_seconds": round(outcome.clock_seconds, 1),
        "production_moved": outcome.production == candidate,
        "evidence": {
            key.removeprefix("release.evidence."): value
            for key, value in tags.items()
            if key.startswith("release.evidence.")
        },
        "statuses": {role: {str(k): v for k, v in t.statuses.items()} for role, t in stage.traffic.items()},
        "readiness_transitions": [
            f"{key} {'ready' if ready else 'not ready'} at +{at - outcome.started:.1f}s"
            for key, ready, at in stage.kubelet.transitions
        ],
        "measurements": [line for line in lines if line.startswith(("analysis ", "evidence: "))],
    }


def write_table() -> None:
    rows = [
        "| provider/strategy | case | faults | verdict | time to verdict (s) | production moved |",
        "|---|---|---|---|---|---|",
    ]
    for row in TABLE:
        faults = ", ".join(f"{k}={v}" for k, v in row["faults"].items()) or "-"
        rows.append(
            f"| {row['provider']}/{row['strategy']} | {row['case']} | {faults} | {row['verdict']} | "
            f"{row['real_seconds']} | {'yes' if row['production_moved'] else 'no'} |"
        )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"fault_matrix_{TABLE[0]['provider']}.md").write_text("\n".join(rows) + "\n")


def served_versions(url: str, selector: str) -> set[str]:
    # Over the last window only: an earlier native case's candidate had the same track name.
    window = f"{WINDOW_SECONDS:.0f}s"
    promql = f"max by (model_version) (max_over_time(tabula_model_info{{{selector}}}[{window}]))"
    body = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
    return {sample["metric"]["model_version"] for sample in body["data"]["result"]}


def wait_scraped(url: str, scrape: Scrape, stage: Stage, timeout: float = 30) -> None:
    """Until Prometheus scrapes this case's stable pod (the loop checks `up` before it changes anything)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if selector := stage.selectors.get("stable"):
            promql = f'up{{job="{scrape.job}", namespace="{scrape.namespace}", {selector}}} == 1'
            body = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5).json()
            if body["data"]["result"]:
                return
        time.sleep(0.25)
    raise AssertionError(f"Prometheus never scraped the stable track ({stage.selectors})")
