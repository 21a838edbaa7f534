"""Soft range checks and PSI drift on inputs whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from contracts.artifacts import FeatureStatistics
from service.drift import DriftWindow, population_stability_index
from service.ranges import RangeChecker
from tests.unit.service.conftest import FEATURES

pytestmark = pytest.mark.unit

INSIDE = [4.0, 20.0, 5.0, 1.0, 1000.0, 3.0, 34.0, -118.0]


def test_rows_inside_the_training_range_raise_no_flags(stats: FeatureStatistics) -> None:
    assert RangeChecker(stats, list(FEATURES)).check(np.array([INSIDE, INSIDE])) == []


def test_out_of_range_values_are_located(stats: FeatureStatistics) -> None:
    second = list(INSIDE)
    second[0], second[5] = 16.5, 9.0
    found = RangeChecker(stats, list(FEATURES)).check(np.array([INSIDE, second]))
    assert [(f.row, f.feature, f.value, f.low, f.high) for f in found] == [
        (1, "MedInc", 16.5, 0.0, 16.0),
        (1, "AveOccup", 9.0, 0.0, 8.0),
    ]


def test_checker_follows_the_model_column_order(stats: FeatureStatistics) -> None:
    order = list(reversed(FEATURES))
    row = list(reversed(INSIDE))
    row[0] = -130.0  # Longitude, now first
    (found,) = RangeChecker(stats, order).check(np.array([row]))
    assert (found.feature, found.value) == ("Longitude", -130.0)


def test_psi_of_identical_distributions_is_zero() -> None:
    shares = np.array([0.1, 0.2, 0.3, 0.4])
    assert population_stability_index(shares, shares) == 0.0


def test_psi_matches_the_formula() -> None:
    expected = 0.4 * math.log(0.9 / 0.5) + (-0.4) * math.log(0.1 / 0.5)
    assert population_stability_index(np.array([0.5, 0.5]), np.array([0.9, 0.1])) == pytest.approx(expected)


def test_psi_stays_finite_for_empty_bins() -> None:
    assert math.isfinite(population_stability_index(np.array([0.5, 0.5]), np.array([1.0, 0.0])))


def test_window_matching_the_training_bins_has_no_drift(stats: FeatureStatistics) -> None:
    window = DriftWindow(stats, list(FEATURES), size=400)
    # MedInc bins are [<4, 4-8, 8-12, >=12]: 100 rows in each.
    rows = np.tile(np.array(INSIDE), (400, 1))
    rows[:, 0] = np.repeat([1.0, 5.0, 9.0, 13.0], 100)
    window.add(rows)
    assert window.psi()["MedInc"] == pytest.approx(0.0, abs=1e-12)


def test_window_concentrated_in_one_bin_drifts(stats: FeatureStatistics) -> None:
    window = DriftWindow(stats, list(FEATURES), size=100)
    window.add(np.tile(np.array(INSIDE), (100, 1)))
    floor = 1e-4
    # All of MedInc=4.0 falls in the second bin [4, 8).
    expected = 0.75 * math.log(1 / 0.25) + 3 * (floor - 0.25) * math.log(floor / 0.25)
    assert window.psi()["MedInc"] == pytest.approx(expected)


def test_window_keeps_only_the_newest_rows(stats: FeatureStatistics) -> None:
    window = DriftWindow(stats, list(FEATURES), size=10)
    old = np.tile(np.array(INSIDE), (7, 1))
    old[:, 0] = 1.0
    new = np.tile(np.array(INSIDE), (10, 1))
    new[:, 0] = 13.0
    window.add(old)
    for start in range(0, 10, 3):  # wraps around the ring buffer
        window.add(new[start : start + 3])
    assert window.filled == 10
    only_new = DriftWindow(stats, list(FEATURES), size=10)
    only_new.add(new)
    assert window.psi() == pytest.approx(only_new.psi())


def test_empty_window_reports_nothing(stats: FeatureStatistics) -> None:
    assert DriftWindow(stats, list(FEATURES), size=5).psi() == {}
