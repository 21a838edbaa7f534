"""Hand-made feature statistics with round numbers, so expected results can be worked out by hand;
small model directories (a housing regressor, an Iris classifier) as ``service.packaging`` writes them."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.ensemble import HistGradientBoostingRegressor

from contracts.artifacts import (
    CONTRACT_FILE,
    FEATURE_STATS_FILE,
    GOLDEN_SET_FILE,
    QUANTILES,
    FeatureStatistics,
    FeatureSummary,
    GoldenSet,
    Histogram,
)
from contracts.examples import load_example
from contracts.model import ModelContract
from contracts.modelio import SKOPS_FILE
from service.logs import JsonFormatter, configure_logger
from service.model import ModelInfo
from training.stats import feature_statistics


def example_contract(name: str, target: str, class_labels: list[str] | None = None) -> ModelContract:
    """The contract training derives for a bundled example: its declared features and limits."""
    spec = load_example(name).spec
    return ModelContract(
        example=spec.name,
        task=spec.task,
        features=spec.features,
        target=target,
        description=spec.description,
        class_labels=class_labels or [],
    )


HOUSING = example_contract("housing", "MedHouseVal")
FEATURES = HOUSING.feature_names
IRIS_LABELS = ["setosa", "versicolor", "virginica"]
IRIS = example_contract("iris", "species", IRIS_LABELS)

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


def hand_made_stats() -> FeatureStatistics:
    return FeatureStatistics(
        n_rows=1000, features=[summary(name, *RANGES[name]) for name in FEATURES], target="MedHouseVal"
    )


@pytest.fixture
def stats() -> FeatureStatistics:
    return hand_made_stats()


INFO = ModelInfo.from_metadata(
    {"registered_name": "housing-price", "registered_version": "1", "run_id": "r1"}, "housing-price:v1"
)


def model_dir(
    root: Path, stats: FeatureStatistics, columns: list[str], contract: ModelContract = HOUSING
) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.uniform(1, 10, size=(200, len(columns))), columns=columns)
    estimator = HistGradientBoostingRegressor(max_iter=5, random_state=0).fit(frame, frame.iloc[:, 0])
    skops.io.dump(estimator, root / SKOPS_FILE)
    stats.write(root / FEATURE_STATS_FILE)
    contract.write(root / CONTRACT_FILE)
    rows = frame.iloc[:3]
    GoldenSet(
        feature_names=columns,
        rows=rows.to_numpy().tolist(),
        predictions=estimator.predict(rows).tolist(),
        tolerance=1e-9,
    ).write(root / GOLDEN_SET_FILE)
    return root


def iris_frame() -> tuple[pd.DataFrame, pd.Series]:
    """scikit-learn's bundled Iris with the example's column names and the species as labels."""
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = bunch.frame.rename(columns=load_example("iris").spec.dataset.rename)
    labels = frame.pop("species").map(dict(enumerate(bunch.target_names)))
    return frame[IRIS.feature_names].astype("float64"), labels


def iris_model_dir(root: Path, estimator: Any) -> Path:
    """``estimator`` fitted on Iris, saved with its contract, statistics and golden set."""
    frame, labels = iris_frame()
    estimator.fit(frame, labels)
    skops.io.dump(estimator, root / SKOPS_FILE)
    feature_statistics(frame, "species").write(root / FEATURE_STATS_FILE)
    IRIS.write(root / CONTRACT_FILE)
    rows = frame.iloc[::15]
    GoldenSet(
        feature_names=IRIS.feature_names,
        rows=rows.to_numpy().tolist(),
        classes=IRIS_LABELS,
        labels=[str(label) for label in estimator.predict(rows)],
        probabilities=estimator.predict_proba(rows).tolist(),
        tolerance=1e-9,
    ).write(root / GOLDEN_SET_FILE)
    return root


class Lines(logging.Handler):
    """The service logger's JSON lines, kept in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def logged() -> Iterator[Lines]:
    logger = configure_logger(INFO.name, INFO.version, "json", "INFO")
    lines = Lines()
    logger.addHandler(lines)
    yield lines
    logger.removeHandler(lines)
