"""A model directory that cannot be served fails with one line naming the file, never a raw traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from contracts.artifacts import CONTRACT_FILE, FEATURE_STATS_FILE, GOLDEN_SET_FILE, FeatureStatistics
from contracts.modelio import SKOPS_FILE, ModelLoadError
from service.model import load_model_dir
from tests.unit.service.conftest import (
    FEATURES,
    INFO,
    IRIS,
    IRIS_LABELS,
    hand_made_stats,
    iris_model_dir,
    model_dir,
)

pytestmark = pytest.mark.unit


def test_a_sound_model_directory_loads(tmp_path: Path, stats: FeatureStatistics) -> None:
    loaded = load_model_dir(model_dir(tmp_path, stats, list(FEATURES)), INFO)
    assert loaded.feature_names == list(FEATURES)
    assert loaded.golden_error() < 1e-9


@pytest.mark.parametrize(
    ("fault", "file"),
    [
        ("missing-model", SKOPS_FILE),
        ("corrupt-model", SKOPS_FILE),
        ("missing-stats", FEATURE_STATS_FILE),
        ("missing-contract", CONTRACT_FILE),
        ("corrupt-contract", CONTRACT_FILE),
        ("corrupt-golden", GOLDEN_SET_FILE),
    ],
)
def test_a_missing_or_corrupt_file_is_named_in_one_line(
    tmp_path: Path, stats: FeatureStatistics, fault: str, file: str
) -> None:
    path = model_dir(tmp_path, stats, list(FEATURES))
    if fault.startswith("missing"):
        (path / file).unlink()
    else:
        (path / file).write_bytes(b"not what it should be" * 10)
    with pytest.raises(ModelLoadError) as raised:
        load_model_dir(path, INFO)
    message = str(raised.value)
    assert file in message
    assert str(path) in message
    assert "\n" not in message


def test_a_model_for_other_features_is_refused(tmp_path: Path, stats: FeatureStatistics) -> None:
    path = model_dir(tmp_path, stats, [f"x{i}" for i in range(len(FEATURES))])
    with pytest.raises(ModelLoadError, match="its contract serves"):
        load_model_dir(path, INFO)


def test_a_classifier_whose_labels_differ_from_its_contract_is_refused(tmp_path: Path) -> None:
    path = iris_model_dir(tmp_path, LogisticRegression(max_iter=300))
    IRIS.model_copy(update={"class_labels": list(reversed(IRIS_LABELS))}).write(path / CONTRACT_FILE)
    with pytest.raises(ModelLoadError, match="differ from the contract's") as raised:
        load_model_dir(path, INFO)
    assert "\n" not in str(raised.value)


def test_a_golden_set_of_the_other_task_is_refused(tmp_path: Path) -> None:
    (tmp_path / "iris").mkdir()
    iris = iris_model_dir(tmp_path / "iris", LogisticRegression(max_iter=300))
    (tmp_path / "tabula").mkdir()
    housing = model_dir(tmp_path / "tabula", hand_made_stats(), list(FEATURES))
    (housing / GOLDEN_SET_FILE).write_bytes((iris / GOLDEN_SET_FILE).read_bytes())
    with pytest.raises(ModelLoadError, match="does not fit a regression model"):
        load_model_dir(housing, INFO)


def test_the_contract_decides_the_task_and_the_outputs(tmp_path: Path) -> None:
    model = load_model_dir(iris_model_dir(tmp_path, LogisticRegression(max_iter=300)), INFO)
    assert model.contract.task == "classification"
    assert model.predictor == "scikit-learn"
    outputs = model.predict(np.asarray(model.golden.rows))
    assert outputs.shape == (len(model.golden.rows), len(IRIS_LABELS))
    assert model.golden_error() < 1e-12
