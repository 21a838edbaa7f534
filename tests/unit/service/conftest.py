"""Hand-made feature statistics with round numbers, so expected results can be worked out by hand."""

from __future__ import annotations

import pytest

from service.schemas import FEATURES
from training.artifacts import QUANTILES, FeatureStatistics, FeatureSummary, Histogram

INF = float("inf")


def summary(name: str, low: float, high: float) -> FeatureSummary:
    """Uniform-ish feature on [low, high]: four equal bins, soft range exactly [low, high]."""
    width = (high - low) / 4
    quantiles = {str(q): low + q * (high - low) for q in QUANTILES}
    quantiles["0.001"], quantiles["0.999"] = low, high
    return FeatureSummary(
        name=name,
        min=low,
        max=high,
        mean=(low + high) / 2,
        std=width,
        quantiles=quantiles,
        histogram=Histogram(
            bin_edges=[-INF, low + width, low + 2 * width, low + 3 * width, INF],
            proportions=[0.25, 0.25, 0.25, 0.25],
        ),
    )


RANGES = {
    "MedInc": (0.0, 16.0),
    "HouseAge": (0.0, 52.0),
    "AveRooms": (0.0, 20.0),
    "AveBedrms": (0.0, 4.0),
    "Population": (0.0, 40000.0),
    "AveOccup": (0.0, 8.0),
    "Latitude": (32.0, 42.0),
    "Longitude": (-124.0, -114.0),
}


@pytest.fixture
def stats() -> FeatureStatistics:
    return FeatureStatistics(
        n_rows=1000, features=[summary(name, *RANGES[name]) for name in FEATURES], target="MedHouseVal"
    )
