"""Prometheus metrics of the service, all labelled with the model's name and version.

prometheus_client is imported only when :class:`ServiceMetrics` is built: BentoML workers set
``PROMETHEUS_MULTIPROC_DIR`` after importing the service module, and prometheus_client picks its
storage mode at import time.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import Counter as CounterMetric
    from prometheus_client.metrics import Gauge, Histogram

# Every metric name starts with this: renaming the product's metrics is this one line.
METRIC_PREFIX = "tabula_"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Regression outputs; they suit the housing example's target ($100k, capped at 5.00001), which the
# chart's prediction-shift analysis was sized on.
VALUE_BUCKETS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0)
# Classification: the top-class probability.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Up to this many values a histogram observes them one by one: sorting them into buckets costs more.
FEW_VALUES = 8


class LabelledChildren:
    """Labelled children of one model's metrics, cached: ``labels()`` takes a lock and builds a tuple
    each call. Called with a metric and its other labels, it gives the child with the model's labels too."""

    def __init__(self, model_labels: dict[str, str]) -> None:
        self._model_labels = model_labels
        self._children: dict[tuple[Any, ...], Any] = {}

    def __call__(self, metric: Any, **labels: str) -> Any:
        key = (metric, *labels.items())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**self._model_labels, **labels)
        return child


class ServiceMetrics:
    """The ``tabula_*`` metrics of docs/architecture.md, bound to one model.

    Both tasks count rows in ``predictions_total``; a regressor's values go to ``prediction_value``,
    a classifier's labels to ``predicted_class_total`` and its top-class probability to
    ``prediction_confidence``.

    No label may share a name with a target label the prometheus-operator attaches (``endpoint``,
    ``namespace``, ``service``, ``pod``, ``container``, ``job``, ``instance``, ``node``): a Prometheus
    with ``overrideHonorLabels`` would rename ours to ``exported_*`` and every query would miss it.
    The request path is therefore ``route``.
    """

    def __init__(
        self, model_name: str, model_version: str, run_id: str, registry: CollectorRegistry | None
    ) -> None:
        from prometheus_client import Counter as CounterMetric
        from prometheus_client import Gauge, Histogram

        model = ["model_name", "model_version"]
        # Under BentoML each worker writes its own files; gauges keep the newest live value.
        gauge_mode = (
            {"multiprocess_mode": "livemostrecent"} if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else {}
        )
        self.model_labels = {"model_name": model_name, "model_version": model_version}
        self._child = LabelledChildren(self.model_labels)
        self.http_requests: CounterMetric = CounterMetric(
            METRIC_PREFIX + "http_requests_total",
            "HTTP requests to the prediction API.",
            [*model, "route", "status_code"],
            registry=registry,
        )
        self.http_duration: Histogram = Histogram(
            METRIC_PREFIX + "http_request_duration_seconds",
            "Time to answer a prediction API request.",
            [*model, "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.predictions: CounterMetric = CounterMetric(
            METRIC_PREFIX + "predictions_total", "Rows predicted.", [*model, "route"], registry=registry
        )
        self.prediction_value: Histogram = Histogram(
            METRIC_PREFIX + "prediction_value",
            "Predicted values (regression).",
            model,
            buckets=VALUE_BUCKETS,
            registry=registry,
        )
        self.predicted_class: CounterMetric = CounterMetric(
            METRIC_PREFIX + "predicted_class_total",
            "Rows answered per class label (classification).",
            [*model, "route", "class"],
            registry=registry,
        )
        self.prediction_confidence: Histogram = Histogram(
            METRIC_PREFIX + "prediction_confidence",
            "Probability of the predicted class (classification).",
            model,
            buckets=CONFIDENCE_BUCKETS,
            registry=registry,
        )
        self.out_of_range: CounterMetric = CounterMetric(
            METRIC_PREFIX + "input_out_of_range_total",
            "Input values outside the training range (accepted, flagged).",
            [*model, "feature"],
            registry=registry,
        )
        self.drift_psi: Gauge = Gauge(
            METRIC_PREFIX + "feature_drift_psi",
            "Population stability index of recent inputs vs the training data.",
            [*model, "feature"],
            registry=registry,
            **gauge_mode,  # type: ignore[arg-type]
        )
        self.model_info: Gauge = Gauge(
            METRIC_PREFIX + "model_info",
            "The model this process serves (always 1).",
            [*model, "run_id"],
            registry=registry,
            **gauge_mode,  # type: ignore[arg-type]
        )
        self.log_dropped: CounterMetric = CounterMetric(
            METRIC_PREFIX + "prediction_log_dropped_total",
            "Prediction-log records dropped because the sink was full or failing.",
            [*model, "sink"],
            registry=registry,
        )
        self.shed: CounterMetric = CounterMetric(
            METRIC_PREFIX + "requests_shed_total",
            "Requests refused with 503 to protect latency.",
            [*model, "reason"],
            registry=registry,
        )
        self.model_info.labels(**self.model_labels, run_id=run_id).set(1)

    def observe_predictions(self, route: str, values: list[float]) -> None:
        """A regressor's answers: rows counted, values observed."""
        self._child(self.predictions, route=route).inc(len(values))
        observe_each(self._child(self.prediction_value), values)

    def observe_classes(self, route: str, labels: list[str], confidences: list[float]) -> None:
        """A classifier's answers: rows counted, per label, and each top-class probability observed."""
        self._child(self.predictions, route=route).inc(len(labels))
        for label, count in Counter(labels).items():
            self._child(self.predicted_class, route=route, **{"class": label}).inc(count)
        observe_each(self._child(self.prediction_confidence), confidences)

    def observe_request(self, route: str, status_code: int, seconds: float) -> None:
        self._child(self.http_requests, route=route, status_code=str(status_code)).inc()
        self._child(self.http_duration, route=route).observe(seconds)

    def count_out_of_range(self, feature: str) -> None:
        self.out_of_range.labels(**self.model_labels, feature=feature).inc()

    def set_drift(self, psi: dict[str, float]) -> None:
        for feature, value in psi.items():
            self.drift_psi.labels(**self.model_labels, feature=feature).set(value)

    def count_dropped(self, sink: str, n: int = 1) -> None:
        self.log_dropped.labels(**self.model_labels, sink=sink).inc(n)

    def count_shed(self, reason: str) -> None:
        self._child(self.shed, reason=reason).inc()


def observe_each(histogram: Histogram, values: Sequence[float]) -> None:
    """``histogram.observe(value)`` for every value, in one increment per bucket that gets any.

    prometheus-client has no bulk observe, and one call costs about 1.6 µs (under BentoML a write to the
    worker's metrics file per bucket and sum): 1.6 ms of the event loop for a 1,000-row batch, a tenth of
    its prediction. Its buckets and sum are private to it; a unit test checks the result against
    ``observe`` per value. The sum gets one addition, of the values' sum.
    """
    if len(values) <= FEW_VALUES:
        for value in values:
            histogram.observe(value)
        return
    bounds = histogram._upper_bounds  # private: no public bulk observe, see the docstring
    # observe() counts a value in the first bucket whose bound is at least it: searchsorted's "left".
    # NaN sorts past the last bound (+Inf) and, as there, lands in no bucket.
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1)
    histogram._sum.inc(sum(values))
    for bucket, count in zip(histogram._buckets, counts[: len(bounds)].tolist(), strict=True):
        if count:
            bucket.inc(count)


def exposition() -> tuple[bytes, str]:
    """Every worker's metrics in Prometheus' text format, and its content type.

    Under BentoML each worker writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR``; they are
    merged at scrape time. Without that directory (one process), the default registry is read.
    """
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
    return generate_latest(registry), CONTENT_TYPE_LATEST
