"""The compiled predictor equals scikit-learn bit for bit, or is not used at all."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from contracts.artifacts import FeatureStatistics
from service import compiled
from service.api import PredictionAPI
from service.compiled import compile_model, run_steps
from service.config import ServiceSettings
from service.logs import LOGGER_NAME
from service.model import load_model_dir
from tests.unit.service.conftest import FEATURES, INFO, Lines, model_dir

pytestmark = pytest.mark.unit


def data(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 8)) * [2, 10, 1, 0.2, 500, 1, 2, 2] + [4, 28, 5, 1, 1400, 3, 35, -119]
    y = 0.5 * x[:, 0] + np.sin(x[:, 6]) + rng.normal(scale=0.1, size=rows)
    return x, y


@pytest.mark.parametrize(
    "pipeline",
    [
        make_pipeline(StandardScaler(), HistGradientBoostingRegressor(max_iter=60, random_state=0)),
        make_pipeline(
            MinMaxScaler(), HistGradientBoostingRegressor(max_iter=30, max_depth=4, random_state=0)
        ),
        HistGradientBoostingRegressor(max_iter=40, loss="poisson", random_state=0),
        # One tree: no routing nodes in front of it.
        HistGradientBoostingRegressor(max_iter=1, random_state=0),
        # An odd number of trees of uneven depth: the routing tree is unbalanced.
        HistGradientBoostingRegressor(max_iter=37, max_leaf_nodes=None, max_depth=9, random_state=0),
    ],
    ids=["scaler+hgb", "other-transform+hgb", "bare-hgb-poisson", "one-tree", "37-deep-trees"],
)
def test_compiled_predictions_are_identical(pipeline: object) -> None:
    x, y = data(2000, seed=1)
    pipeline.fit(x, np.abs(y))  # type: ignore[attr-defined]
    check, fresh = data(300, seed=2)[0], data(500, seed=3)[0]
    predict = compile_model(pipeline, check)
    assert predict is not None
    expected = pipeline.predict(fresh)  # type: ignore[attr-defined]
    assert np.array_equal(predict(fresh), expected)
    assert np.array_equal(run_steps(predict.in_steps(fresh)), expected)
    for size in (1, 2, 7):
        assert np.array_equal(predict(fresh[:size]), expected[:size])
        assert np.array_equal(run_steps(predict.in_steps(fresh[:size])), expected[:size])


def test_missing_values_follow_the_learned_direction() -> None:
    x, y = data(2000, seed=4)
    x[::7, 2] = np.nan  # the model learns where missing AveRooms go
    model = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(x, y)
    fresh = data(200, seed=5)[0]
    fresh[::3, 2] = np.nan
    predict = compile_model(model, fresh)
    assert predict is not None
    assert np.array_equal(predict(fresh), model.predict(fresh))


@pytest.mark.parametrize(
    "model",
    [
        make_pipeline(StandardScaler(), Ridge()),
        RandomForestRegressor(n_estimators=3, random_state=0),
    ],
    ids=["ridge", "forest"],
)
def test_other_models_are_left_to_scikit_learn(model: object) -> None:
    x, y = data(300, seed=6)
    model.fit(x, y)  # type: ignore[attr-defined]
    assert compile_model(model, x[:20]) is None


def test_categorical_splits_are_left_to_scikit_learn() -> None:
    x, y = data(500, seed=7)
    x[:, 1] = np.round(np.abs(x[:, 1])) % 5
    model = HistGradientBoostingRegressor(max_iter=10, categorical_features=[1], random_state=0).fit(x, y)
    assert compile_model(model, x[:20]) is None


def _walker_renamed(module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(module, "_predict_from_raw_data")


def _walker_signature_changed(module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def walk(*args: Any) -> None:
        raise TypeError(f"_predict_from_raw_data() takes 8 positional arguments but {len(args)} were given")

    monkeypatch.setattr(module, "_predict_from_raw_data", walk)


def _walker_writes_nothing(module: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "_predict_from_raw_data", lambda *args: None)


@pytest.mark.parametrize(
    ("break_compile", "cause"),
    [
        (_walker_renamed, "ImportError: cannot import name '_predict_from_raw_data'"),
        (_walker_signature_changed, "TypeError: _predict_from_raw_data() takes 8"),
        (_walker_writes_nothing, "differ from scikit-learn's on"),
    ],
    ids=["walker-renamed", "walker-signature-changed", "walker-results-differ"],
)
def test_a_failing_compile_falls_back_to_scikit_learn_and_stays_ready(
    tmp_path: Path,
    stats: FeatureStatistics,
    logged: Lines,
    monkeypatch: pytest.MonkeyPatch,
    break_compile: Callable[[Any, pytest.MonkeyPatch], None],
    cause: str,
) -> None:
    from sklearn.ensemble._hist_gradient_boosting import _predictor

    # A scikit-learn release that changes the private walker the compiled predictor is built on.
    break_compile(_predictor, monkeypatch)
    model = load_model_dir(model_dir(tmp_path, stats, list(FEATURES)), INFO)
    api = PredictionAPI(model, ServiceSettings(), logging.getLogger(LOGGER_NAME))
    try:
        assert model.predictor == "scikit-learn"
        golden = model.golden
        rows = np.asarray(golden.rows)[:, [golden.feature_names.index(n) for n in model.feature_names]]
        assert np.array_equal(model.predict(rows), np.asarray(golden.predictions))
        assert api.golden_set_reproduces()
    finally:
        api.close()
    warnings = [line for line in logged.lines if line["level"] == "WARNING"]
    assert len(warnings) == 1, logged.lines
    assert warnings[0]["message"] == "compiled predictor not used, predicting with scikit-learn"
    assert cause in warnings[0]["cause"], warnings[0]


def classes(x: np.ndarray, n_classes: int) -> np.ndarray:
    score = 0.5 * x[:, 0] + np.sin(x[:, 6]) + x[:, 3]
    edges = np.quantile(score, np.linspace(0, 1, n_classes + 1)[1:-1])
    names: np.ndarray = np.array(["low", "mid", "high", "top"])[np.searchsorted(edges, score)]
    return names


@pytest.mark.parametrize(
    ("classifier", "n_classes"),
    [
        (make_pipeline(StandardScaler(), HistGradientBoostingClassifier(max_iter=40, random_state=0)), 2),
        (HistGradientBoostingClassifier(max_iter=25, random_state=0), 3),
        # Four classes, an odd number of iterations of uneven depth: 4 x 13 trees behind the router.
        (HistGradientBoostingClassifier(max_iter=13, max_depth=7, max_leaf_nodes=None, random_state=0), 4),
    ],
    ids=["binary-scaled", "three-classes", "four-classes-deep"],
)
def test_compiled_class_probabilities_are_identical(classifier: object, n_classes: int) -> None:
    x, _ = data(2000, seed=8)
    classifier.fit(x, classes(x, n_classes))  # type: ignore[attr-defined]
    check, fresh = data(300, seed=9)[0], data(500, seed=10)[0]
    predict = compile_model(classifier, check, "classification")
    assert predict is not None
    expected = classifier.predict_proba(fresh)  # type: ignore[attr-defined]
    assert expected.shape == (500, n_classes)
    assert np.array_equal(predict(fresh), expected)
    assert np.array_equal(run_steps(predict.in_steps(fresh)), expected)
    for size in (1, 2, 7):
        assert np.array_equal(predict(fresh[:size]), expected[:size])
        assert np.array_equal(run_steps(predict.in_steps(fresh[:size])), expected[:size])


@pytest.mark.parametrize(
    ("model", "task", "cause"),
    [
        (make_pipeline(StandardScaler(), LogisticRegression()), "classification", "LogisticRegression"),
        (RandomForestClassifier(n_estimators=3, random_state=0), "classification", "RandomForestClassifier"),
        (HistGradientBoostingClassifier(max_iter=3), "regression", "does not serve a regression contract"),
    ],
    ids=["logistic", "forest", "classifier-for-a-regression"],
)
def test_other_classifiers_are_left_to_scikit_learn_with_the_reason_logged(
    logged: Lines, model: object, task: str, cause: str
) -> None:
    x, _ = data(300, seed=11)
    model.fit(x, classes(x, 3))  # type: ignore[attr-defined]
    assert compile_model(model, x[:20], task) is None
    [line] = [line for line in logged.lines if "compiled predictor" in line["message"]]
    assert line["level"] == "INFO"
    assert cause in line["cause"]


def test_a_classifier_whose_compiled_probabilities_differ_falls_back(
    logged: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, _ = data(500, seed=12)
    model = HistGradientBoostingClassifier(max_iter=5, random_state=0).fit(x, classes(x, 3))
    original = compiled.CompiledTrees.predict
    off = 1.0000001
    monkeypatch.setattr(compiled.CompiledTrees, "predict", lambda self, rows: original(self, rows) * off)
    assert compile_model(model, x[:50], "classification") is None
    [line] = [line for line in logged.lines if line["level"] == "WARNING"]
    assert "differ from scikit-learn's on 50 check rows" in line["cause"]


def test_a_batch_is_walked_in_steps_of_a_bounded_number_of_tree_walks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, y = data(2000, seed=13)
    model = HistGradientBoostingRegressor(max_iter=60, random_state=0).fit(x, y)
    predict = compile_model(model, x[:20])
    assert predict is not None
    # 500 rows and at most 1,000 walks a step: two trees a step, 30 steps for 60 trees.
    monkeypatch.setattr(compiled, "WALKS_PER_STEP", 1000)
    assert sum(1 for _ in predict.in_steps(x[:500])) == 30
    assert np.array_equal(run_steps(predict.in_steps(x[:500])), model.predict(x[:500]))


def test_a_model_whose_tree_by_tree_walk_differs_falls_back(
    logged: Lines, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = data(500, seed=14)
    model = HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(x, y)
    original = compiled.CompiledTrees.predict_in_steps

    def reversed_sum(self: compiled.CompiledTrees, rows: np.ndarray) -> compiled.Steps:
        self.tree_nodes.reverse()  # the trees summed in another order than scikit-learn's
        return (yield from original(self, rows))

    monkeypatch.setattr(compiled.CompiledTrees, "predict_in_steps", reversed_sum)
    assert compile_model(model, x[:50]) is None
    [line] = [line for line in logged.lines if line["level"] == "WARNING"]
    assert "tree by tree differ from scikit-learn's on 50 check rows" in line["cause"]


def test_a_loaded_model_predicts_a_large_batch_tree_by_tree_not_with_scikit_learn(
    tmp_path: Path, stats: FeatureStatistics
) -> None:
    model = load_model_dir(model_dir(tmp_path, stats, list(FEATURES)), INFO)
    assert model.predictor == "compiled-trees"
    rows = np.random.default_rng(15).normal(size=(40, len(model.feature_names))) + 3
    expected = model.sklearn(rows)

    def not_called(rows: np.ndarray) -> np.ndarray:
        raise AssertionError("scikit-learn predicted a batch the compiled trees cover")

    model.sklearn = not_called
    assert np.array_equal(model.predict(rows), expected)
