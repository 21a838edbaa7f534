"""Feature statistics: the artifact the service checks soft limits and drift with."""

from __future__ import annotations

import numpy as np
import pandas as pd

from contracts.artifacts import QUANTILES, FeatureStatistics, FeatureSummary, Histogram

HISTOGRAM_BINS = 10


def _histogram(values: np.ndarray) -> Histogram:
    """Deciles of the training data as bins, open at both ends so any input lands in one."""
    inner = np.unique(np.quantile(values, np.linspace(0, 1, HISTOGRAM_BINS + 1)[1:-1]))
    edges = np.concatenate(([-np.inf], inner, [np.inf]))
    counts = np.histogram(values, bins=edges)[0]
    return Histogram(
        bin_edges=[float(edge) for edge in edges],
        proportions=[float(count) / values.size for count in counts],
    )


def feature_statistics(features: pd.DataFrame, target: str) -> FeatureStatistics:
    """Per-feature min/max/mean/std, quantiles and histogram of the training rows."""
    summaries = []
    for name in features.columns:
        values = features[name].to_numpy(dtype="float64")
        quantiles = np.quantile(values, QUANTILES)
        summaries.append(
            FeatureSummary(
                name=str(name),
                min=float(values.min()),
                max=float(values.max()),
                mean=float(values.mean()),
                std=float(values.std()),
                quantiles={
                    str(level): float(value) for level, value in zip(QUANTILES, quantiles, strict=True)
                },
                histogram=_histogram(values),
            )
        )
    return FeatureStatistics(n_rows=len(features), features=summaries, target=target)
