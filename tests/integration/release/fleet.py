"""Real tracks for release tests: `bentoml serve` per track, a real Prometheus, traffic, and a kubelet.

Each track is a real server process of a Bento built by `tabula build` from a version registered in
a real MLflow store (tests/integration/reliability/harness.py registers the versions,
tests/integration/service/conftest.py builds and serves). Faults come from tests/faults/sitecustomize.py
(``with_faults``): raise_rate, delay_seconds, shift, never_ready, crash_after.

Prometheus (Debian's binary) scrapes every track the way the chart's ServiceMonitor asks the
prometheus-operator to: job = the metrics Service's name, the release namespace, honor_labels as the
endpoint says, and the track as the target label the chart's queries select on
(``rollouts_pod_template_hash=<hash>`` for Argo, ``tabula_io_track=<track>`` for native, from
podTargetLabels). Targets come and go through file-based discovery, as pods do. ``model_version`` comes
from the service itself. The job, namespace and track label are read from the chart as rendered.

The :class:`Kubelet` plays the kubelet's readiness probe for the fake API server: it probes each real
process' ``/readyz`` (the chart's readinessProbe) and writes the result into the pods (``Ready``
condition) and Deployments (``availableReplicas``) of the track the process plays. A Service sends
traffic only to Ready endpoints, so :class:`Traffic` sends only while its track is Ready.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.clock import AnyClock
from tests.integration.reliability.harness import MODEL_NAME, ModelVersions, payload_rows, register_versions
from tests.integration.service.conftest import run_cli
from tests.support import Server, server_home, service_env, start_server, unmeasured, with_faults
from tests.unit.release.fake_kube import FakeKube, Request, Response

Manifest = dict[str, Any]
PODS = "/api/v1/namespaces/{namespace}/pods/"
DEPLOYMENTS = "/apis/apps/v1/namespaces/{namespace}/deployments/"


@dataclass(frozen=True)
class Bentos:
    """Registered versions by role and the Bento `tabula build` made of each, in one BentoML home."""

    versions: ModelVersions
    tags: dict[str, str]

    @property
    def home(self) -> Path:
        return self.versions.bentoml_home


def build_bentos(root: Path, shifts: dict[str, float]) -> Bentos:
    """One registered version per role (fitted on the target plus its shift), each built into a Bento."""
    versions = register_versions(root, shifts)
    env = {**service_env(versions.bentoml_home), "MLFLOW_TRACKING_URI": versions.tracking_uri}
    tags = {}
    for role, version in versions.versions.items():
        result = run_cli(["build", "--model-name", MODEL_NAME, "--version", version], env)
        assert result.returncode == 0, result.stderr[-3000:]
        tags[role] = result.stdout.strip().splitlines()[-1]
    return Bentos(versions, tags)


@dataclass(frozen=True)
class Scrape:
    """How the chart's ServiceMonitor has Prometheus scrape the release's pods."""

    job: str
    namespace: str
    honor_labels: bool
    path: str
    track_label: str
    interval: str
    timeout: str

    @classmethod
    def of_chart(cls, objects: list[Manifest]) -> Scrape:
        """From `helm template` of the release: ServiceMonitor, metrics Service, analysis ConfigMap."""
        (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
        wanted = monitor["spec"]["selector"]["matchLabels"].items()
        (service,) = [
            o for o in objects if o["kind"] == "Service" and wanted <= o["metadata"]["labels"].items()
        ]
        (config,) = [o for o in objects if o["kind"] == "ConfigMap" and "analysis.json" in o.get("data", {})]
        track_label = json.loads(config["data"]["analysis.json"])["trackLabel"]
        # The operator's sanitizeLabelName (pkg/prometheus/promcfg.go) of each podTargetLabel.
        attached = {re.sub(r"[^a-zA-Z0-9_]", "_", name) for name in monitor["spec"]["podTargetLabels"]}
        assert track_label in attached, f"{track_label} is not among the target labels {attached}"
        (endpoint,) = monitor["spec"]["endpoints"]
        (namespace,) = monitor["spec"]["namespaceSelector"]["matchNames"]
        return cls(
            job=service["metadata"]["name"],
            namespace=namespace,
            honor_labels=endpoint["honorLabels"],
            path=endpoint["path"],
            track_label=track_label,
            interval=endpoint["interval"],
            timeout=endpoint["scrapeTimeout"],
        )

    def config(self, sd_file: Path) -> dict[str, Any]:
        """A scrape config discovering the tracks' targets from ``sd_file`` (see :class:`Targets`)."""
        return {
            "job_name": self.job,
            "scrape_interval": self.interval,
            "scrape_timeout": self.timeout,
            "metrics_path": self.path,
            "honor_labels": self.honor_labels,
            "file_sd_configs": [{"files": [str(sd_file)], "refresh_interval": "1s"}],
        }


@dataclass
class Targets:
    """The file Prometheus discovers pods from: one group per (track value, server)."""

    sd_file: Path
    namespace: str
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._write()

    def add(self, label: str, value: str, server: Server) -> None:
        """A pod of track ``value`` served by ``server``, labelled as the ServiceMonitor labels it."""
        with self.lock:
            self.groups[f"{label}={value}"] = {
                "targets": [server.base_url.removeprefix("http://")],
                "labels": {"namespace": self.namespace, "pod": f"pod-{value}", label: value},
            }
            self._write()

    def remove(self, label: str, value: str) -> None:
        with self.lock:
            self.groups.pop(f"{label}={value}", None)
            self._write()

    def _write(self) -> None:
        scratch = self.sd_file.with_suffix(".tmp")
        scratch.write_text(json.dumps(list(self.groups.values())))
        scratch.replace(self.sd_file)  # atomically, so Prometheus never reads half a file


class Kubelet:
    """Readiness probes of real processes, written into the fake API's pods and Deployments.

    ``bind(label, value, server, on_pod)``: pods carrying ``label=value`` run in ``server``;
    ``on_pod`` runs once the first such pod exists (it is then scraped and can get traffic). A prober
    thread asks each bound server's ``/readyz`` every ``period`` seconds and writes the answers into
    pod and Deployment status; a hook of the fake API server does the same before each request, so
    the loop never reads a readiness the probes did not report (tests/fakes/cluster.py makes the
    chart's Deployments Ready at once until this corrects them).
    """

    def __init__(self, fake: FakeKube, clock: AnyClock, namespace: str, probe: ReadinessProbe) -> None:
        self.fake, self.clock, self.namespace, self.probe = fake, clock, namespace, probe
        self.bound: dict[tuple[str, str], Server] = {}
        self.ready: dict[tuple[str, str], bool] = {}
        self.failures: dict[tuple[str, str], int] = {}
        self.waiting: dict[tuple[str, str], Callable[[], None]] = {}
        self.transitions: list[tuple[str, bool, float]] = []  # (label=value, ready, monotonic time)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._probe, daemon=True)
        fake.hooks.insert(0, self._hook)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.fake.hooks.remove(self._hook)

    def bind(self, label: str, value: str, server: Server, on_pod: Callable[[], None]) -> None:
        key = (label, value)
        self.bound[key] = server
        self.ready[key] = self.probe.passes(server)
        self.failures[key] = 0
        self.waiting[key] = on_pod

    def is_ready(self, label: str, value: str) -> bool:
        return self.ready.get((label, value), False)

    def _probe(self) -> None:
        while not self._stop.wait(self.probe.period_seconds):
            for key, server in list(self.bound.items()):
                passed = self.probe.passes(server)
                self.failures[key] = 0 if passed else self.failures.get(key, 0) + 1
                # successThreshold 1: one pass makes it Ready; failureThreshold failures in a row unready.
                now = passed or (self.ready[key] and self.failures[key] < self.probe.failure_threshold)
                if now != self.ready.get(key):
                    self.transitions.append(("=".join(key), now, time.monotonic()))
                self.ready[key] = now
            with self.fake.lock:
                self.sync()

    def _hook(self, request: Request) -> Response | None:
        del request  # every request sees the probes' last answers
        self.sync()
        return None

    def sync(self) -> None:
        """The probes' last answers into pods and Deployments (call with the fake's lock held)."""
        pods = PODS.format(namespace=self.namespace)
        for path, obj in list(self.fake.objects.items()):
            if path.startswith(pods):
                self._sync_pod(obj)
            elif path.startswith(DEPLOYMENTS.format(namespace=self.namespace)):
                labels = obj["spec"]["template"]["metadata"].get("labels", {})
                for (label, value), ready in list(self.ready.items()):
                    if labels.get(label) == value:
                        wanted = obj["spec"].get("replicas", 1)
                        obj.setdefault("status", {})["availableReplicas"] = wanted if ready else 0

    def _sync_pod(self, pod: dict[str, Any]) -> None:
        labels = pod["metadata"].get("labels", {})
        for (label, value), ready in list(self.ready.items()):
            if labels.get(label) != value:
                continue
            if (on_pod := self.waiting.pop((label, value), None)) is not None:
                on_pod()
            status = pod.setdefault("status", {})
            conditions = [c for c in status.get("conditions", []) if c.get("type") != "Ready"]
            current = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
            wanted = "True" if ready else "False"
            if current is None or current.get("status") != wanted:
                current = {"type": "Ready", "status": wanted, "lastTransitionTime": self.clock.iso()}
            status["conditions"] = [*conditions, current]


@dataclass(frozen=True)
class ReadinessProbe:
    """The chart's readinessProbe on ``/readyz`` (values ``probes.readiness``)."""

    period_seconds: float
    failure_threshold: int
    timeout_seconds: float

    @classmethod
    def of_values(cls, readiness: dict[str, Any]) -> ReadinessProbe:
        return cls(
            float(readiness["periodSeconds"]),
            int(readiness["failureThreshold"]),
            float(readiness["timeoutSeconds"]),
        )

    def passes(self, server: Server) -> bool:
        if server.process.poll() is not None:
            return False
        try:
            response = httpx.get(f"{server.base_url}/readyz", timeout=self.timeout_seconds)
        except httpx.TransportError:
            return False
        return response.status_code == 200


class Traffic:
    """One-row predictions to a server at ``rate`` requests/s in all from ``users`` threads (each waits
    users/rate seconds between its requests, as the chart's load Job does), while ``receiving()``."""

    def __init__(self, url: str, rate: float, receiving: Callable[[], bool], users: int = 1) -> None:
        self.url = f"{url}/predict"
        self.interval = users / rate
        self.receiving = receiving
        self.statuses: Counter[int | str] = Counter()
        self._stop = threading.Event()
        self.rate = rate
        self._threads = [
            threading.Thread(target=self._run, args=(user / rate,), daemon=True) for user in range(users)
        ]

    def start(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def answered(self) -> int:
        return sum(n for status, n in self.statuses.items() if isinstance(status, int))

    def _run(self, offset: float) -> None:
        rows = payload_rows()
        due = time.monotonic() + offset
        with httpx.Client(timeout=10) as client:
            while True:
                due = max(due + self.interval, time.monotonic() - 1)
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                if not self.receiving():
                    continue  # no Ready endpoint behind the Service
                # The row of the time slot: every track gets the same rows over any window, so two
                # tracks of one model predict the same distribution.
                row = rows[round(due * self.rate) % len(rows)]
                try:
                    status: int | str = client.post(self.url, json=row).status_code
                except httpx.TransportError as error:
                    status = type(error).__name__
                self.statuses[status] += 1


def serve_bento(
    bento: str, home: Path, log_path: Path, faults: dict[str, str], settings: Mapping[str, str] | None = None
) -> Server:
    """`bentoml serve` of ``bento`` with test faults and service ``settings`` (env), in a BentoML home of
    its own; alive, maybe not ready.

    Not traced for coverage: the service suites measure this code, and here the tracer only cost the
    fault matrix a tenth of its CPU (203 + 13 s against 185 + 13 s for the Argo canary's 8 cases).
    """
    env = unmeasured(with_faults(service_env(server_home(home, log_path)), **faults) | dict(settings or {}))
    return start_server([bento], env, log_path)
