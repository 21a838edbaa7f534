"""Prometheus metrics of the service, all labelled with the model's name and version.

prometheus_client is imported only when :class:`ServiceMetrics` is built: BentoML workers set
``PROMETHEUS_MULTIPROC_DIR`` after importing the service module, and prometheus_client picks its
storage mode at import time.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics import Counter, Gauge, Histogram

# Every metric name starts with this; one place to rename them all.
METRIC_PREFIX = "housing_"
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# Units of $100k; the training target is capped at 5.00001.
VALUE_BUCKETS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0)


class ServiceMetrics:
    """The ``housing_*`` metrics of docs/architecture.md, bound to one model.

    No label may share a name with a target label the prometheus-operator attaches (``endpoint``,
    ``namespace``, ``service``, ``pod``, ``container``, ``job``, ``instance``, ``node``): a Prometheus
    with ``overrideHonorLabels`` would rename ours to ``exported_*`` and every query would miss it.
    The request path is therefore ``route``.
    """

    def __init__(
        self, model_name: str, model_version: str, run_id: str, registry: CollectorRegistry | None
    ) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        model = ["model_name", "model_version"]
        # Under BentoML each worker writes its own files; gauges keep the newest live value.
        gauge_mode = (
            {"multiprocess_mode": "livemostrecent"} if os.environ.get("PROMETHEUS_MULTIPROC_DIR") else {}
        )
        self.model_labels = {"model_name": model_name, "model_version": model_version}
        self._children: dict[tuple[Any, ...], Any] = {}
        self.http_requests: Counter = Counter(
            "housing_http_requests_total",
            "HTTP requests to the prediction API.",
            [*model, "route", "status_code"],
            registry=registry,
        )
        self.http_duration: Histogram = Histogram(
            "housing_http_request_duration_seconds",
            "Time to answer a prediction API request.",
            [*model, "route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.predictions: Counter = Counter(
            "housing_predictions_total", "Rows predicted.", [*model, "route"], registry=registry
        )
        self.prediction_value: Histogram = Histogram(
            "housing_prediction_value",
            "Predicted values, in $100,000.",
            model,
            buckets=VALUE_BUCKETS,
            registry=registry,
        )
        self.out_of_range: Counter = Counter(
            "housing_input_out_of_range_total",
            "Input values outside the training range (accepted, flagged).",
            [*model, "feature"],
            registry=registry,
        )
        self.drift_psi: Gauge = Gauge(
            "housing_feature_drift_psi",
            "Population stability index of recent inputs vs the training data.",
            [*model, "feature"],
            registry=registry,
            **gauge_mode,  # type: ignore[arg-type]
        )
        self.model_info: Gauge = Gauge(
            "housing_model_info",
            "The model this process serves (always 1).",
            [*model, "run_id"],
            registry=registry,
            **gauge_mode,  # type: ignore[arg-type]
        )
        self.log_dropped: Counter = Counter(
            "housing_prediction_log_dropped_total",
            "Prediction-log records dropped because the sink was full or failing.",
            [*model, "sink"],
            registry=registry,
        )
        self.shed: Counter = Counter(
            "housing_requests_shed_total",
            "Requests refused with 503 to protect latency.",
            [*model, "reason"],
            registry=registry,
        )
        self.model_info.labels(**self.model_labels, run_id=run_id).set(1)

    def observe_predictions(self, route: str, values: list[float]) -> None:
        self._child(self.predictions, route=route).inc(len(values))
        histogram = self._child(self.prediction_value)
        for value in values:
            histogram.observe(value)

    def observe_request(self, route: str, status_code: int, seconds: float) -> None:
        self._child(self.http_requests, route=route, status_code=str(status_code)).inc()
        self._child(self.http_duration, route=route).observe(seconds)

    def _child(self, metric: Any, **labels: str) -> Any:
        """Labelled child of ``metric``, cached: ``labels()`` takes a lock and builds a tuple each call."""
        key = (metric, *labels.items())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(**self.model_labels, **labels)
        return child

    def count_out_of_range(self, feature: str) -> None:
        self.out_of_range.labels(**self.model_labels, feature=feature).inc()

    def set_drift(self, psi: dict[str, float]) -> None:
        for feature, value in psi.items():
            self.drift_psi.labels(**self.model_labels, feature=feature).set(value)

    def count_dropped(self, sink: str, n: int = 1) -> None:
        self.log_dropped.labels(**self.model_labels, sink=sink).inc(n)

    def count_shed(self, reason: str) -> None:
        self._child(self.shed, reason=reason).inc()


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
