"""Classification and regression behind one protocol, and a gate that knows which way is better."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, log_loss

from contracts.artifacts import GoldenSet
from contracts.errors import ConfigError
from contracts.model import FeatureSpec, ModelContract
from contracts.params import CandidateParams, PromotionParams
from training.candidates import build_pipeline
from training.registry import gate
from training.tasks import ACCURACY, LOG_LOSS, MAE, RMSE, Classification, Metric, Regression, gate_metric

pytestmark = pytest.mark.unit
PROMOTION = PromotionParams(margin=0.0, bootstrap_samples=500, confidence=0.95)
LABELS = ["a", "b", "c"]
CLASSIFICATION = Classification(
    ModelContract(
        example="t", task="classification", features=[FeatureSpec(name="x")], target="y", class_labels=LABELS
    )
)
REGRESSION = Regression(
    ModelContract(example="t", task="regression", features=[FeatureSpec(name="x")], target="y")
)


def probabilities(classes: np.ndarray, sharpness: float, seed: int, k: int = 3) -> np.ndarray:
    """Noisy class probabilities: the larger ``sharpness``, the more of them favour the true class."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(classes.size, k))
    logits[np.arange(classes.size), classes] += sharpness
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture
def classes() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 3, size=1500)


@pytest.fixture
def truth() -> np.ndarray:
    return np.random.default_rng(0).normal(2.0, 1.0, size=2000)


def regression_pair(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return truth + rng.normal(0, 0.4, truth.size), truth + rng.normal(0, 0.6, truth.size)


def classification_pair(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return probabilities(classes, 2.5, seed=1), probabilities(classes, 1.0, seed=2)


@pytest.mark.parametrize("metric", [RMSE, MAE], ids=lambda metric: metric.name)
def test_regression_metrics_promote_the_better_and_reject_the_worse(
    truth: np.ndarray, metric: Metric
) -> None:
    good, bad = regression_pair(truth)
    better = gate("2", "1", truth, good, bad, PROMOTION, 0, metric=metric)
    worse = gate("2", "1", truth, bad, good, PROMOTION, 0, metric=metric)
    assert better.outcome == "promoted"
    assert worse.outcome == "rejected"
    assert better.comparison is not None
    assert better.comparison.diff < 0
    assert better.comparison.ci_high < 0
    assert f"test {metric.label} " in better.reason
    assert "lies below -0" in better.reason


@pytest.mark.parametrize("metric", [LOG_LOSS, ACCURACY], ids=lambda metric: metric.name)
def test_classification_metrics_promote_the_better_and_reject_the_worse(
    classes: np.ndarray, metric: Metric
) -> None:
    good, bad = classification_pair(classes)
    better = gate("2", "1", classes, good, bad, PROMOTION, 0, metric=metric)
    worse = gate("2", "1", classes, bad, good, PROMOTION, 0, metric=metric)
    assert better.outcome == "promoted", better.reason
    assert worse.outcome == "rejected", worse.reason
    assert better.comparison is not None
    assert worse.comparison is not None
    tags = better.tags()
    assert tags["promotion.metric"] == metric.name
    if metric.higher_is_better:
        # Accuracy: better means a positive difference whose whole interval lies above the margin.
        assert better.comparison.diff > 0
        assert better.comparison.ci_low > 0
        assert tags["promotion.higher_is_better"] == "true"
        assert "lies above +0" in better.reason
        assert worse.comparison.diff < 0
    else:
        assert better.comparison.diff < 0
        assert better.comparison.ci_high < 0
        assert "lies below -0" in better.reason
        assert worse.comparison.diff > 0


def test_a_margin_holds_back_a_small_accuracy_gain(classes: np.ndarray) -> None:
    good, bad = classification_pair(classes)
    lenient = gate("2", "1", classes, good, bad, PROMOTION, 0, metric=ACCURACY)
    assert lenient.comparison is not None
    strict = PromotionParams(margin=lenient.comparison.ci_low + 0.01, bootstrap_samples=500)
    assert gate("2", "1", classes, good, bad, strict, 0, metric=ACCURACY).outcome == "rejected"


def test_equally_good_classifiers_are_not_promoted(classes: np.ndarray) -> None:
    one, other = probabilities(classes, 1.5, seed=3), probabilities(classes, 1.5, seed=4)
    for metric in (LOG_LOSS, ACCURACY):
        decision = gate("2", "1", classes, one, other, PROMOTION, 0, metric=metric)
        assert decision.outcome == "rejected"
        assert decision.comparison is not None
        assert decision.comparison.ci_low < 0 < decision.comparison.ci_high


def test_classification_quality_matches_scikit_learn(classes: np.ndarray) -> None:
    scores = probabilities(classes, 1.5, seed=5)
    labels = pd.Series(np.asarray(LABELS)[classes])
    quality = CLASSIFICATION.quality(labels, scores)
    predicted = scores.argmax(axis=1)
    assert quality["log_loss"] == pytest.approx(log_loss(classes, scores, labels=[0, 1, 2]))
    assert quality["accuracy"] == pytest.approx(accuracy_score(classes, predicted))
    assert quality["f1_macro"] == pytest.approx(f1_score(classes, predicted, average="macro"))
    assert LOG_LOSS.value(classes, scores) == pytest.approx(quality["log_loss"])


def test_a_confident_mistake_costs_a_finite_log_loss() -> None:
    scores = np.array([[1.0, 0.0, 0.0]])
    assert np.isfinite(LOG_LOSS.value(np.array([1]), scores))


def fitted_classifier(labels: list[str]) -> tuple[LogisticRegression, pd.DataFrame]:
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"x": rng.normal(size=90)})
    y = np.asarray(labels)[np.digitize(frame["x"], [-0.4, 0.4])]
    return LogisticRegression().fit(frame, y), frame


def test_classifier_golden_set_holds_labels_and_probabilities() -> None:
    model, frame = fitted_classifier(LABELS)
    golden = CLASSIFICATION.golden_set(model, frame.head(6))
    assert golden.classes == LABELS
    assert golden.labels == [str(label) for label in model.predict(frame.head(6))]
    assert np.allclose(golden.probabilities, model.predict_proba(frame.head(6)))
    assert golden.predictions == []
    assert golden.is_classification


def test_a_model_with_other_classes_cannot_be_scored_against_the_contract() -> None:
    model, frame = fitted_classifier(["a", "b", "z"])
    with pytest.raises(ValueError, match="differ from the contract"):
        CLASSIFICATION.scores(model, frame)
    with pytest.raises(ValueError, match=r"labels \['z'\] are not among"):
        CLASSIFICATION.targets(pd.Series(["a", "z"]))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"classes": ["a", "b"], "labels": ["a"], "probabilities": [[0.5, 0.5]], "predictions": [1.0]},
            "not predictions",
        ),
        ({"classes": ["a", "b"], "labels": ["q"], "probabilities": [[0.5, 0.5]]}, "one of the classes"),
        ({"classes": ["a", "b"], "labels": ["a"], "probabilities": [[1.0]]}, "one probability per class"),
        ({"classes": ["a", "b"], "labels": [], "probabilities": []}, "one label and one probability row"),
        ({"predictions": []}, "one prediction per row"),
    ],
)
def test_golden_set_shapes_are_checked(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GoldenSet.model_validate({"feature_names": ["x"], "rows": [[1.0]]} | fields)


def test_gate_metric_follows_the_task() -> None:
    assert gate_metric(REGRESSION, None) is RMSE
    assert gate_metric(CLASSIFICATION, None) is LOG_LOSS
    assert gate_metric(CLASSIFICATION, "accuracy") is ACCURACY
    with pytest.raises(
        ConfigError, match=r"'accuracy' does not apply to regression; use one of \['mae', 'rmse'\]"
    ):
        gate_metric(REGRESSION, "accuracy")
    with pytest.raises(ConfigError, match="'rmse' does not apply to classification"):
        gate_metric(CLASSIFICATION, "rmse")


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        ("sklearn.ensemble.RandomForestRegressor", "not a classifier"),
        ("sklearn.svm.LinearSVC", "no class probabilities"),
    ],
)
def test_classification_candidates_must_be_probabilistic_classifiers(estimator: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_pipeline(CandidateParams(estimator=estimator), seed=0, kind="classifier")
    assert build_pipeline(
        CandidateParams(estimator="sklearn.ensemble.RandomForestClassifier"), 0, "classifier"
    )
