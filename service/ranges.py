"""Soft limits: inputs outside the training range are accepted but flagged and counted."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from contracts.artifacts import FeatureStatistics

# The soft range is [q0.1%, q99.9%] of the training split (see contracts/artifacts.py).
LOW_QUANTILE = "0.001"
HIGH_QUANTILE = "0.999"


@dataclass(frozen=True)
class OutOfRange:
    row: int
    feature: str
    value: float
    low: float
    high: float


class RangeChecker:
    """Vectorised check of rows (in ``feature_names`` order) against the training range."""

    def __init__(self, stats: FeatureStatistics, feature_names: list[str]) -> None:
        by_name = stats.by_name()
        self.feature_names = feature_names
        self.low = np.array([_quantile(by_name[name].quantiles, LOW_QUANTILE) for name in feature_names])
        self.high = np.array([_quantile(by_name[name].quantiles, HIGH_QUANTILE) for name in feature_names])

    def check(self, rows: npt.NDArray[np.float64]) -> list[OutOfRange]:
        outside = (rows < self.low) | (rows > self.high)
        if not outside.any():
            return []
        return [
            OutOfRange(
                row=int(r),
                feature=self.feature_names[c],
                value=float(rows[r, c]),
                low=float(self.low[c]),
                high=float(self.high[c]),
            )
            for r, c in zip(*np.nonzero(outside), strict=True)
        ]


def _quantile(quantiles: dict[str, float], level: str) -> float:
    # Writers may format the level as "0.001" or "0.0010"; compare numerically.
    for key, value in quantiles.items():
        if float(key) == float(level):
            return value
    raise KeyError(f"feature statistics lack the {level} quantile")
