"""Real tracks for release tests: one `bentoml serve` per track, a real Prometheus, traffic on each.

Each track is a real server process of a Bento built by `housing build` from a version registered in
a real MLflow store (tests/integration/reliability/harness.py registers the versions,
tests/integration/service/conftest.py builds and serves). Faults come from tests/faults/sitecustomize.py
(``with_faults``): raise_rate, delay_seconds, shift, never_ready, crash_after.

Prometheus (Debian's binary) scrapes every track the way the chart's ServiceMonitor asks the
prometheus-operator to: job = the metrics Service's name, the release namespace, honor_labels as the
endpoint says, and the track as the target label the chart's queries select on
(``rollouts_pod_template_hash=<hash>`` for Argo, ``housing_io_track=<track>`` for native, from
podTargetLabels). ``model_version`` comes from the service itself. The job, namespace and track label
are read from the chart as rendered for the release, never repeated here.

A traffic generator sends held-out rows to every track at a fixed rate; it stands in for the chart's
analysis load Job and for users, which this machine has no cluster to run.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.integration.reliability.harness import MODEL_NAME, ModelVersions, payload_rows, register_versions
from tests.integration.service.conftest import (
    Server,
    run_cli,
    server_home,
    service_env,
    start_server,
    stop_server,
    wait_ready,
    with_faults,
)
from tests.support import prometheus_server

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Bentos:
    """Registered versions by role and the Bento `housing build` made of each, in one BentoML home."""

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
class Track:
    """One track: the value of its target label, the Bento its pod serves, injected faults, settings,
    and its own traffic rate (requests/s) when the fleet's would overload it."""

    name: str
    bento: str
    faults: Mapping[str, str] = field(default_factory=dict)
    settings: Mapping[str, str] = field(default_factory=dict)
    rate: float | None = None

    @property
    def becomes_ready(self) -> bool:
        return self.faults.get("never_ready") != "1"


@dataclass(frozen=True)
class Scrape:
    """How the chart's ServiceMonitor has Prometheus scrape the release's pods."""

    job: str
    namespace: str
    honor_labels: bool
    path: str
    track_label: str

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
            service["metadata"]["name"], namespace, endpoint["honorLabels"], endpoint["path"], track_label
        )

    def config(self, targets: dict[str, str]) -> dict[str, Any]:
        """A static scrape config: one target per track (name -> host:port), labelled as its pod would be."""
        return {
            "job_name": self.job,
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "metrics_path": self.path,
            "honor_labels": self.honor_labels,
            "static_configs": [
                {
                    "targets": [address],
                    "labels": {"namespace": self.namespace, "pod": f"pod-{track}", self.track_label: track},
                }
                for track, address in targets.items()
            ],
        }


class Traffic:
    """One-row predictions to a server at a fixed rate, on a thread of its own, until stopped."""

    def __init__(self, url: str, rate: float) -> None:
        self.url = f"{url}/predict"
        self.interval = 1 / rate
        self.statuses: Counter[int | str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def _run(self) -> None:
        rows = payload_rows()
        due = time.monotonic()
        with httpx.Client(timeout=10) as client:
            for index in range(10**9):
                due += self.interval
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    return
                try:
                    status: int | str = client.post(self.url, json=rows[index % len(rows)]).status_code
                except httpx.TransportError as error:
                    status = type(error).__name__
                self.statuses[status] += 1


@dataclass
class Fleet:
    """The running tracks, the Prometheus scraping them and the traffic on each."""

    prometheus: str
    scrape: Scrape
    servers: dict[str, Server]
    traffic: dict[str, Traffic]
    # Since when Prometheus has seen every track, and what each track had answered by then.
    seen_since: float = field(default_factory=time.monotonic)
    answered_before: dict[str, int] = field(default_factory=dict)

    def answered(self, track: str) -> int:
        """Requests the track answered with an HTTP status since ``seen_since``."""
        statuses = self.traffic[track].statuses
        total = sum(n for status, n in statuses.items() if isinstance(status, int))
        return total - self.answered_before.get(track, 0)

    def seconds_seen(self) -> int:
        return int(time.monotonic() - self.seen_since)

    def query(self, promql: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.prometheus}/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for_traffic(self, tracks: list[str], window: str = "30s", timeout: float = 90) -> None:
        """Until Prometheus computes a prediction rate for each of ``tracks``."""
        label = self.scrape.track_label
        promql = (
            f"sum by ({label}) (rate(housing_predictions_total"
            f'{{job="{self.scrape.job}", namespace="{self.scrape.namespace}"}}[{window}])) > 0'
        )
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            seen = {sample["metric"].get(label, "") for sample in self.query(promql)}
            if set(tracks) <= seen:
                # A counter's first sample is never part of an increase: count from here on.
                self.seen_since = time.monotonic()
                self.answered_before = {track: self.answered(track) for track in self.traffic}
                return
            time.sleep(0.5)
        raise AssertionError(f"no prediction rate in Prometheus for {set(tracks) - seen} after {timeout}s")


def serve_track(track: Track, home: Path, log_dir: Path) -> Server:
    log_path = log_dir / f"{track.name}.log"
    env = with_faults(service_env(server_home(home, log_path), **track.settings), **track.faults)
    return start_server([track.bento], env, log_path)


@contextmanager
def running_fleet(
    tracks: list[Track], home: Path, root: Path, scrape: Scrape, rate: float = 8.0
) -> Iterator[Fleet]:
    """Every track served (started side by side), scraped, and loaded at ``rate`` requests/s each."""
    root.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        with ThreadPoolExecutor(max_workers=len(tracks)) as pool:
            futures = {t.name: pool.submit(serve_track, t, home, root) for t in tracks}
        servers: dict[str, Server] = {}
        for name, future in futures.items():
            if future.exception() is None:
                servers[name] = future.result()
                stack.callback(stop_server, servers[name])
        for future in futures.values():
            if (error := future.exception()) is not None:
                raise error
        for track in tracks:
            if track.becomes_ready:
                wait_ready(servers[track.name])
        targets = {name: server.base_url.removeprefix("http://") for name, server in servers.items()}
        prometheus = stack.enter_context(prometheus_server(root / "prometheus", [scrape.config(targets)]))
        traffic = {t.name: Traffic(servers[t.name].base_url, t.rate or rate) for t in tracks}
        for generator in traffic.values():
            generator.start()
            stack.callback(generator.stop)
        yield Fleet(prometheus, scrape, servers, traffic)
