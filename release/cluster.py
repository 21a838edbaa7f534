"""What every cluster command talks to: settings, Helm, the Kubernetes API, a clock and a log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from release import chart
from release.config import ReleaseSettings
from release.errors import ReleaseError
from release.evidence import AnalysisSpec, Prometheus, analysis_spec
from release.helm import Helm
from release.kube import Clock, Deadline, Kube, WallClock
from release.switch import require_safe_switch

Log = Callable[[str], None]


@dataclass
class Cluster:
    """Everything a cluster command talks to."""

    settings: ReleaseSettings
    helm: Helm
    kube: Kube
    log: Log
    clock: Clock = field(default_factory=WallClock)

    @property
    def release(self) -> str:
        return self.settings.release_name

    def values(self) -> dict[str, Any] | None:
        return self.helm.get_values(self.release, computed=True)

    def installed_values(self) -> dict[str, Any]:
        values = self.values()
        if values is None:
            raise ReleaseError(
                f"Helm release {self.release!r} is not installed in namespace {self.settings.namespace}: "
                "install it first with `tabula deploy`"
            )
        return values

    def render(self, overrides: dict[str, Any]) -> list[dict[str, Any]]:
        """``helm template`` of the release's user values, the values files, then ``overrides``."""
        user_values = self.helm.get_values(self.release, computed=False) or {}
        return self.helm.template(
            self.release, self.settings.chart, user_values, self.settings.values_files, overrides
        )

    def upgrade(self, overrides: dict[str, Any]) -> int:
        """``helm upgrade --install``, once the cluster serves every kind the chart will render and the
        upgrade keeps at least one of the serving workloads (:mod:`release.switch`).

        Every command that changes the release (deploy, release, rollout) upgrades here.
        """
        objects = self.render(overrides)
        self.kube.require_kinds(objects)
        require_safe_switch(self.kube, objects)
        revision = self.helm.upgrade_install(
            self.release, self.settings.chart, self.settings.values_files, overrides
        )
        changes = ", ".join(f"{key}={value}" for key, value in flatten(overrides))
        self.log(f"helm upgrade --install {self.release}: revision {revision} ({changes})")
        return revision

    def analysis(self) -> AnalysisSpec | None:
        """The analysis ConfigMap the installed values render (None: the chart renders none)."""
        name = chart.suffixed(self.installed_values(), self.release, "analysis")
        return analysis_spec(self.render({}), name)

    def prometheus(self) -> Prometheus:
        if not self.settings.prometheus_url:
            raise ReleaseError(
                "the release loop reads its evidence from Prometheus: set --prometheus-url "
                "(TABULA_RELEASE_PROMETHEUS_URL)"
            )
        return Prometheus(self.settings.prometheus_url)

    def require_scraped(self, prometheus: Prometheus) -> None:
        """Fail in one line unless Prometheus scrapes the release's metrics Service (``up{job=...}``).

        The prometheus-operator names the job after the Service; a ServiceMonitor without the labels the
        Prometheus selects (kube-prometheus-stack: ``release: <its Helm release>``) is never scraped,
        and a release without metrics could never show evidence.
        """
        values = self.installed_values()
        if not chart.dig(values, "monitoring.enabled", True):
            raise ReleaseError(
                "monitoring.enabled is false: the release's evidence comes from Prometheus; enable the "
                "chart's ServiceMonitor (monitoring.enabled=true)"
            )
        job = chart.suffixed(values, self.release, "metrics")
        selector = f'job="{job}", namespace="{self.settings.namespace}"'
        waited = Deadline(self.settings.scrape_wait_seconds, self.settings.poll_seconds, self.clock)
        while not prometheus.vector(f"up{{{selector}}} == 1"):
            if waited.remaining() <= 0:
                raise ReleaseError(
                    f"Prometheus at {prometheus.url} has no target up{{{selector}}} after "
                    f"{waited.seconds:.0f}s: the ServiceMonitor is not selected; set the chart value "
                    "monitoring.serviceMonitor.labels to {release: <your kube-prometheus-stack release>}"
                )
            waited.sleep(f"a scrape of up{{{selector}}}")

    def deadline(self) -> Deadline:
        return Deadline(self.settings.timeout_seconds, self.settings.poll_seconds, self.clock)


def flatten(values: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict):
            pairs += flatten(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs
