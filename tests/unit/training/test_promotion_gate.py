"""The promotion gate: a worse or equal challenger is never promoted, a provably better one is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contracts.model import FeatureSpec, ModelContract
from contracts.params import PromotionParams
from training.evaluate import compare
from training.registry import Decision
from training.registry import gate as registry_gate
from training.tasks import RMSE, Regression

pytestmark = pytest.mark.unit
PROMOTION = PromotionParams(margin=0.0, bootstrap_samples=500, confidence=0.95)
REGRESSION = Regression(
    ModelContract(example="t", task="regression", features=[FeatureSpec(name="x")], target="y")
)


def quality(truth: np.ndarray, predictions: np.ndarray) -> dict[str, float]:
    return REGRESSION.quality(pd.Series(truth), predictions)


def gate(*args: object, **kwargs: object) -> Decision:
    return registry_gate(*args, metric=RMSE, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def truth() -> np.ndarray:
    return np.random.default_rng(0).normal(2.0, 1.0, size=2000)


def noisy(truth: np.ndarray, scale: float, seed: int) -> np.ndarray:
    return truth + np.random.default_rng(seed).normal(0.0, scale, size=truth.size)


def test_first_model_is_promoted(truth: np.ndarray) -> None:
    decision = gate("1", None, truth, noisy(truth, 0.5, 1), None, PROMOTION, seed=0)
    assert decision.outcome == "first"
    assert decision.promoted


def test_clearly_better_challenger_is_promoted(truth: np.ndarray) -> None:
    decision = gate("2", "1", truth, noisy(truth, 0.4, 1), noisy(truth, 0.6, 2), PROMOTION, seed=0)
    assert decision.outcome == "promoted"
    assert decision.comparison is not None
    assert decision.comparison.ci_high < 0
    tags = decision.tags()
    assert tags["promotion.decision"] == "promoted"
    assert tags["promotion.metric"] == "rmse"
    assert tags["promotion.higher_is_better"] == "false"
    assert float(tags["promotion.diff"]) < 0
    assert (
        float(tags["promotion.ci_low"]) <= float(tags["promotion.diff"]) <= float(tags["promotion.ci_high"])
    )
    assert decision.reason.startswith("test RMSE ")
    assert "lies below -0" in decision.reason


def test_worse_challenger_is_rejected(truth: np.ndarray) -> None:
    decision = gate("2", "1", truth, noisy(truth, 0.6, 1), noisy(truth, 0.4, 2), PROMOTION, seed=0)
    assert decision.outcome == "rejected"
    assert not decision.promoted


def test_identical_predictions_are_not_promoted(truth: np.ndarray) -> None:
    predictions = noisy(truth, 0.5, 1)
    decision = gate("2", "1", truth, predictions, predictions.copy(), PROMOTION, seed=0)
    assert decision.outcome == "rejected"


def test_better_by_noise_only_is_not_promoted(truth: np.ndarray) -> None:
    # Two equally good models: one of them is a hair better on this sample, but not provably so.
    decision = gate("2", "1", truth, noisy(truth, 0.5, 1), noisy(truth, 0.5, 2), PROMOTION, seed=0)
    assert decision.outcome == "rejected"
    assert decision.comparison is not None
    assert decision.comparison.ci_low < 0 < decision.comparison.ci_high


def test_margin_is_required_beyond_the_interval(truth: np.ndarray) -> None:
    # Same errors shrunk by 6%: provably better by about 0.03, but not by 0.05.
    champion = noisy(truth, 0.5, 2)
    challenger = truth + 0.94 * (champion - truth)
    lenient = gate("2", "1", truth, challenger, champion, PROMOTION, seed=0)
    strict = gate("2", "1", truth, challenger, champion, PromotionParams(margin=0.05), seed=0)
    assert lenient.outcome == "promoted"
    assert strict.outcome == "rejected"


def test_same_version_is_unchanged(truth: np.ndarray) -> None:
    predictions = noisy(truth, 0.5, 1)
    decision = gate("3", "3", truth, predictions, predictions, PROMOTION, seed=0)
    assert decision.outcome == "unchanged"
    assert not decision.promoted


def test_bootstrap_is_paired_and_reproducible(truth: np.ndarray) -> None:
    challenger, champion = noisy(truth, 0.45, 1), noisy(truth, 0.5, 2)
    first = compare(RMSE, truth, challenger, champion, samples=300, confidence=0.9, seed=5)
    again = compare(RMSE, truth, challenger, champion, samples=300, confidence=0.9, seed=5)
    assert first == again
    assert first.diff == pytest.approx(quality(truth, challenger)["rmse"] - quality(truth, champion)["rmse"])
    assert first.ci_low < first.diff < first.ci_high


def test_decision_tags_name_the_champion() -> None:
    tags = Decision("4", "rejected", "worse", champion="3").tags()
    assert tags == {"promotion.decision": "rejected", "promotion.reason": "worse", "promotion.champion": "3"}


def test_quality_metrics_on_known_values() -> None:
    result = quality(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert result["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert result["mae"] == pytest.approx(2 / 3)
    assert result["r2"] == pytest.approx(1 - 4 / 2)
