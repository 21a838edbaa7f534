"""Model quality, cost, and the paired comparison that decides promotion."""

from __future__ import annotations

import io
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from training.tasks import Metric


def single_row_latency(
    score: Callable[[pd.DataFrame], Any], features: pd.DataFrame, repeats: int = 50
) -> float:
    """Median seconds for one single-row scoring call: what one request to the service costs."""
    rows = [features.iloc[[index % len(features)]] for index in range(repeats)]
    timings = []
    for row in rows:
        start = time.perf_counter()
        score(row)
        timings.append(time.perf_counter() - start)
    return float(np.median(timings))


def model_bytes(model: Any) -> int:
    """Serialized size of the fitted model."""
    buffer = io.BytesIO()
    pickle.dump(model, buffer, protocol=pickle.HIGHEST_PROTOCOL)
    return buffer.tell()


@dataclass(frozen=True)
class Comparison:
    """Challenger minus champion on one metric over identical rows, with a paired-bootstrap interval."""

    metric: str
    higher_is_better: bool
    challenger_value: float
    champion_value: float
    diff: float
    ci_low: float
    ci_high: float
    confidence: float

    def beats(self, margin: float) -> bool:
        """True only when the whole interval lies beyond ``margin`` on the better side: not by luck."""
        if self.higher_is_better:
            return self.ci_low > margin
        return self.ci_high < -margin


def compare(
    metric: Metric,
    targets: np.ndarray,
    challenger_scores: np.ndarray,
    champion_scores: np.ndarray,
    *,
    samples: int,
    confidence: float,
    seed: int,
) -> Comparison:
    """Resample rows with replacement and recompute the metric of both models on the same rows each time."""
    challenger_rows = metric.per_row(targets, challenger_scores)
    champion_rows = metric.per_row(targets, champion_scores)
    size = challenger_rows.size
    rng = np.random.default_rng(seed)
    diffs = np.empty(samples)
    # Chunks keep memory bounded for large test sets.
    chunk = max(1, 2_000_000 // max(1, size))
    for start in range(0, samples, chunk):
        stop = min(samples, start + chunk)
        index = rng.integers(0, size, size=(stop - start, size))
        diffs[start:stop] = metric.finish(challenger_rows[index].mean(axis=1)) - metric.finish(
            champion_rows[index].mean(axis=1)
        )
    tail = (1 - confidence) / 2
    challenger_value = float(metric.finish(np.asarray(challenger_rows.mean())))
    champion_value = float(metric.finish(np.asarray(champion_rows.mean())))
    return Comparison(
        metric=metric.name,
        higher_is_better=metric.higher_is_better,
        challenger_value=challenger_value,
        champion_value=champion_value,
        diff=challenger_value - champion_value,
        ci_low=float(np.quantile(diffs, tail)),
        ci_high=float(np.quantile(diffs, 1 - tail)),
        confidence=confidence,
    )
