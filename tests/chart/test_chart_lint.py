"""`helm lint --strict` over every scenario values file."""

from __future__ import annotations

import pytest

from tests.chart.helm import CHART_DIR, run_helm, scenario_file, scenarios

pytestmark = pytest.mark.chart


@pytest.mark.parametrize("scenario", scenarios())
def test_lint_strict(helm: str, scenario: str) -> None:
    result = run_helm("lint", "--strict", str(CHART_DIR), "--values", str(scenario_file(scenario)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_scenario_matrix_covers_the_required_modes() -> None:
    required = {
        "default",
        "canary",
        "blue-green",
        "native-canary",
        "native-blue-green",
        "hpa",
        "monitoring-off",
        "training-cronjob",
    }
    assert required <= set(scenarios())
