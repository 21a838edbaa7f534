"""A model directory that cannot be served fails with one line naming the file, never a raw traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.artifacts import CONTRACT_FILE, FEATURE_STATS_FILE, GOLDEN_SET_FILE, FeatureStatistics
from service.model import load_model_dir
from tests.unit.service.conftest import FEATURES, INFO, model_dir
from training.modelio import SKOPS_FILE, ModelLoadError

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
