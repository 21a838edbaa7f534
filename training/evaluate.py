"""Model quality, cost, and the paired comparison that decides promotion."""

from __future__ import annotations

import io
import pickle
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Quality:
    rmse: float
    mae: float
    r2: float


def quality(y_true: pd.Series | np.ndarray, y_pred: np.ndarray) -> Quality:
    errors = np.asarray(y_true, dtype="float64") - np.asarray(y_pred, dtype="float64")
    total = np.asarray(y_true, dtype="float64")
    sum_squares = float(np.sum((total - total.mean()) ** 2))
    return Quality(
        rmse=float(np.sqrt(np.mean(errors**2))),
        mae=float(np.mean(np.abs(errors))),
        r2=1.0 - float(np.sum(errors**2)) / sum_squares if sum_squares else 0.0,
    )


def single_row_latency(model: Any, features: pd.DataFrame, repeats: int = 50) -> float:
    """Median seconds for one single-row predict call: what one request to the service costs."""
    rows = [features.iloc[[index % len(features)]] for index in range(repeats)]
    timings = []
    for row in rows:
        start = time.perf_counter()
        model.predict(row)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))


def model_bytes(model: Any) -> int:
    """Serialized size of the fitted model."""
    buffer = io.BytesIO()
    pickle.dump(model, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    return buffer.tell()


@dataclass(frozen=True)
class Comparison:
    """Challenger minus champion RMSE on identical rows, with a paired-bootstrap interval."""

    challenger_rmse: float
    champion_rmse: float
    rmse_diff: float
    ci_low: float
    ci_high: float
    confidence: float

    def beats(self, margin: float) -> bool:
        """True only when the whole interval lies below ``-margin``: better beyond doubt, not by luck."""
        return self.ci_high < -margin


def compare(
    y_true: np.ndarray,
    challenger_pred: np.ndarray,
    champion_pred: np.ndarray,
    *,
    samples: int,
    confidence: float,
    seed: int,
) -> Comparison:
    """Resample rows with replacement and recompute both RMSEs on the same rows each time."""
    y_true = np.asarray(y_true, dtype="float64")
    challenger_sq = (np.asarray(challenger_pred, dtype="float64") - y_true) ** 2
    champion_sq = (np.asarray(champion_pred, dtype="float64") - y_true) ** 2
    rng = np.random.default_rng(seed)
    diffs = np.empty(samples)
    # Chunks keep memory bounded for large test sets.
    chunk = max(1, 2_000_000 // max(1, y_true.size))
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        index = rng.integers(0, y_true.size, size=(stop - start, y_true.size))
        diffs[start:stop] = np.sqrt(challenger_sq[index].mean(axis=1)) - np.sqrt(
            champion_sq[index].mean(axis=1)
        )
    tail = (1 - confidence) / 2
    challenger_rmse = float(np.sqrt(challenger_sq.mean()))
    champion_rmse = float(np.sqrt(champion_sq.mean()))
    return Comparison(
        challenger_rmse=challenger_rmse,
        champion_rmse=champion_rmse,
        rmse_diff=challenger_rmse - champion_rmse,
        ci_low=float(np.quantile(diffs, tail)),
        ci_high=float(np.quantile(diffs, 1 - tail)),
        confidence=confidence,
    )
