"""Population stability index of recent inputs against the training histogram, per feature."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from contracts.artifacts import FeatureStatistics

# Empty bins would make the logarithm infinite; a tiny floor keeps PSI finite and comparable.
PROPORTION_FLOOR = 1e-4


def population_stability_index(expected: npt.NDArray[np.float64], actual: npt.NDArray[np.float64]) -> float:
    """PSI = sum((a - e) * ln(a / e)) over bins, with proportions floored at ``PROPORTION_FLOOR``."""
    e = np.clip(expected, PROPORTION_FLOOR, None)
    a = np.clip(actual, PROPORTION_FLOOR, None)
    return float(np.sum((a - e) * np.log(a / e)))


class DriftWindow:
    """The last ``size`` input rows in a ring buffer, compared on demand with the training bins."""

    def __init__(self, stats: FeatureStatistics, feature_names: list[str], size: int) -> None:
        by_name = stats.by_name()
        self.feature_names = feature_names
        # Only inner edges matter for binning; the outer ones are -inf/+inf.
        self._inner_edges = [np.array(by_name[name].histogram.bin_edges[1:-1]) for name in feature_names]
        self._expected = [np.array(by_name[name].histogram.proportions) for name in feature_names]
        self._buffer = np.empty((size, len(feature_names)), dtype=np.float64)
        self._next = 0
        self._filled = 0

    @property
    def filled(self) -> int:
        return self._filled

    def add(self, rows: npt.NDArray[np.float64]) -> None:
        size = self._buffer.shape[0]
        if rows.shape[0] >= size:
            self._buffer[:] = rows[-size:]
            self._next, self._filled = 0, size
            return
        end = self._next + rows.shape[0]
        if end <= size:
            self._buffer[self._next : end] = rows
        else:
            split = size - self._next
            self._buffer[self._next :] = rows[:split]
            self._buffer[: end - size] = rows[split:]
        self._next = end % size
        self._filled = min(size, self._filled + rows.shape[0])

    def psi(self) -> dict[str, float]:
        """PSI per feature over the rows in the window (empty window: no values)."""
        if self._filled == 0:
            return {}
        window = self._buffer[: self._filled]
        result: dict[str, float] = {}
        for column, name in enumerate(self.feature_names):
            bins = np.searchsorted(self._inner_edges[column], window[:, column], side="right")
            counts = np.bincount(bins, minlength=len(self._expected[column]))
            result[name] = population_stability_index(self._expected[column], counts / self._filled)
        return result
