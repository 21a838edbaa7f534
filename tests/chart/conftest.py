"""Fixtures of the chart tests: one `helm template` per scenario per session."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.chart.helm import Rendered, helm_binary, render_scenario


@pytest.fixture(scope="session")
def helm() -> str:
    return helm_binary()


@pytest.fixture(scope="session")
def rendered(helm: str) -> Callable[[str], Rendered]:
    """Render a scenario once and reuse the objects in every test of the session."""
    cache: dict[str, Rendered] = {}

    def get(scenario: str) -> Rendered:
        if scenario not in cache:
            cache[scenario] = render_scenario(scenario)
        return cache[scenario]

    return get
