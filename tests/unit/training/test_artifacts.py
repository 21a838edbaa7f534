"""Feature statistics and golden sets survive a round trip through their JSON files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.linear_model import LinearRegression

from contracts.artifacts import FeatureStatistics, GoldenSet, Histogram
from contracts.model import FeatureSpec, ModelContract
from training.stats import feature_statistics
from training.tasks import Regression

pytestmark = pytest.mark.unit


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    return pd.DataFrame({"a": rng.normal(size=500), "b": rng.uniform(0, 10, size=500), "flat": np.ones(500)})


def test_feature_statistics_round_trip(frame: pd.DataFrame, tmp_path: Path) -> None:
    stats = feature_statistics(frame, target="y")
    restored = FeatureStatistics.read(stats.write(tmp_path / "feature_stats.json"))
    assert restored == stats
    summary = restored.by_name()["b"]
    assert summary.min == pytest.approx(frame["b"].min())
    assert summary.quantiles["0.5"] == pytest.approx(frame["b"].median())
    edges = summary.histogram.bin_edges
    assert edges[0] == -math.inf
    assert edges[-1] == math.inf
    assert sum(summary.histogram.proportions) == pytest.approx(1.0)
    assert len(summary.histogram.proportions) == 10
    # A constant feature still gets a valid histogram: every row in one bin.
    assert sorted(restored.by_name()["flat"].histogram.proportions) == [0.0, 1.0]
    assert restored.feature_names == ["a", "b", "flat"]


def test_golden_set_holds_the_models_own_predictions(frame: pd.DataFrame, tmp_path: Path) -> None:
    model = LinearRegression().fit(frame, frame["a"] * 2 + frame["b"])
    contract = ModelContract(
        example="t", task="regression", features=[FeatureSpec(name=str(n)) for n in frame.columns], target="y"
    )
    golden = Regression(contract).golden_set(model, frame.sample(n=5, random_state=1))
    restored = GoldenSet.read(golden.write(tmp_path / "golden.json"))
    assert restored == golden
    assert np.allclose(
        model.predict(pd.DataFrame(restored.rows, columns=restored.feature_names)), restored.predictions
    )


@pytest.mark.parametrize(
    ("edges", "proportions", "message"),
    [
        ([0.0, 1.0], [0.5, 0.5], "one more edge"),
        ([0.0, 2.0, 1.0], [0.5, 0.5], "ascending"),
        ([0.0, 1.0, 2.0], [0.5, 0.6], "sum to 1"),
    ],
)
def test_invalid_histograms_are_rejected(edges: list[float], proportions: list[float], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Histogram(bin_edges=edges, proportions=proportions)


def test_golden_set_shape_is_checked() -> None:
    with pytest.raises(ValidationError, match="one prediction per row"):
        GoldenSet(feature_names=["a"], rows=[[1.0], [2.0]], predictions=[1.0])
    with pytest.raises(ValidationError, match="one value per feature"):
        GoldenSet(feature_names=["a", "b"], rows=[[1.0]], predictions=[1.0])
