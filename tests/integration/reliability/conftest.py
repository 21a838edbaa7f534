"""One registered model in a BentoML store, and the service settings the chart configures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.chart.helm import render_scenario
from tests.integration.reliability.harness import ModelVersions, register_versions

# The chart's production-like scenario: its ConfigMap is what a deployed pod runs with.
CHART_SCENARIO = "default"
ENV_PREFIX = "TABULA_SERVICE_"


@pytest.fixture(scope="session")
def model(tmp_path_factory: pytest.TempPathFactory) -> ModelVersions:
    return register_versions(tmp_path_factory.mktemp("reliability-model"), {"stable": 0.0})


@pytest.fixture(scope="session")
def chart_settings() -> dict[str, str]:
    """TABULA_SERVICE_* settings of the chart's server ConfigMap, as serve_model keyword arguments."""
    rendered = render_scenario(CHART_SCENARIO)
    config = next(
        m
        for m in rendered.of_kind("ConfigMap")
        if any(key.startswith(ENV_PREFIX) for key in m.get("data", {}))
    )
    return {
        key.removeprefix(ENV_PREFIX).lower(): value
        for key, value in config["data"].items()
        if key.startswith(ENV_PREFIX)
    }


@pytest.fixture(scope="session")
def grace_seconds() -> float:
    """terminationGracePeriodSeconds the chart gives a pod to drain after SIGTERM."""
    rendered = render_scenario(CHART_SCENARIO)
    workload = next(o for o in rendered.objects if o["kind"] in {"Deployment", "Rollout"})
    return float(workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])


@pytest.fixture(scope="session")
def memory_limit_bytes() -> int:
    """The serving container's memory limit in the chart (an OOM kill above it)."""
    rendered = render_scenario(CHART_SCENARIO)
    workload = next(o for o in rendered.objects if o["kind"] in {"Deployment", "Rollout"})
    limit = str(workload["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"])
    number, unit = re.fullmatch(r"(\d+)(Ki|Mi|Gi)?", limit).groups()  # type: ignore[union-attr]
    return int(number) * {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, None: 1}[unit]


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path
