"""Metric names and labels are the ones docs/architecture.md promises."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from service.metrics import VALUE_BUCKETS, ServiceMetrics, observe_each
from service.shadow import CHAMPION_HEADER, MirrorMetrics, ShadowComparison, ShadowMetrics

pytestmark = pytest.mark.unit

ARCHITECTURE = Path(__file__).resolve().parents[3] / "docs" / "architecture.md"


def test_every_documented_metric_exists_with_model_labels() -> None:
    registry = CollectorRegistry()
    metrics = ServiceMetrics("housing-price", "4", "run123", registry=registry)
    metrics.observe_request("/predict", 200, 0.002)
    metrics.observe_predictions("/predict", [1.5, 2.5])
    metrics.observe_classes("/predict", ["setosa", "virginica", "setosa"], [0.9, 0.55, 0.35])
    metrics.count_out_of_range("MedInc")
    metrics.set_drift({"MedInc": 0.3})
    metrics.count_dropped("database", 2)
    metrics.count_shed("concurrency")
    # The shadow release's series (service/shadow.py): the shadow's pairs and the stable side's copies.
    shadow = ShadowMetrics(metrics.model_labels, registry=registry)
    shadow.observe_request("/predict", 200, 0.004)
    comparison = ShadowComparison(shadow, logging.getLogger("test"), log_pairs=False)
    for champion, answered in (([2.0, 1.0], [2.5, 1.0]), (["setosa"], ["virginica"]), ([1.0], [1.0, 2.0])):
        headers = {CHAMPION_HEADER: json.dumps(champion)}
        comparison.compare(headers.get, SimpleNamespace(predictions=answered))
    mirror = MirrorMetrics(metrics.model_labels, registry=registry)
    mirror.sent()
    mirror.dropped("queue_full")
    text = generate_latest(registry).decode()
    documented = set(re.findall(r"^\| `(tabula_[a-z_]+)`", ARCHITECTURE.read_text(encoding="utf-8"), re.M))
    assert documented, "metric table not found in docs/architecture.md"
    for name in documented:
        lines = [line for line in text.splitlines() if line.startswith(name)]
        assert lines, f"{name} is never exported"
        assert all('model_name="housing-price"' in line and 'model_version="4"' in line for line in lines), (
            name
        )
    assert 'tabula_model_info{model_name="housing-price",model_version="4",run_id="run123"} 1.0' in text
    assert 'tabula_prediction_value_count{model_name="housing-price",model_version="4"} 2.0' in text
    assert 'tabula_prediction_confidence_count{model_name="housing-price",model_version="4"} 3.0' in text
    bucket = 'tabula_prediction_confidence_bucket{le="0.5",model_name="housing-price",model_version="4"}'
    assert f"{bucket} 1.0" in text
    assert (
        'tabula_predicted_class_total{class="setosa",model_name="housing-price",model_version="4",'
        'route="/predict"} 2.0'
    ) in text
    assert (
        'tabula_predictions_total{model_name="housing-price",model_version="4",route="/predict"} 5.0' in text
    )
    assert (
        'tabula_requests_shed_total{model_name="housing-price",model_version="4",reason="concurrency"} 1.0'
        in text
    )


def test_every_name_is_built_from_the_one_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.metrics

    monkeypatch.setattr(service.metrics, "METRIC_PREFIX", "tabular_")
    registry = CollectorRegistry()
    ServiceMetrics("iris-species", "1", "run1", registry=registry)
    names = {family.name for family in registry.collect()}
    assert names
    assert all(name.startswith("tabular_") for name in names), names


@pytest.mark.parametrize(
    "values",
    [
        [1.5, 2.5],  # few: observed one by one
        [0.5, 1.0, 6.0, 6.5, -1.0, 0.0, 5.0, 2.0, 2.0001, 3.5, 4.49],  # on, below and above the bounds
        [float("inf"), 1.0, 2.0, 3.0, 4.0, 5.0, 0.1, 0.2, 0.3],
        [float("nan"), 1.0, 2.0, 3.0, 4.0, 5.0, 0.1, 0.2, 0.3],  # NaN: the sum, no bucket, as observe()
        [round(0.01 * i, 2) for i in range(1000)],
    ],
)
def test_observing_many_values_gives_what_observing_each_gives(values: list[float]) -> None:
    from prometheus_client import Histogram

    def exposed(observe: Callable[[Histogram, list[float]], None]) -> dict[str, float]:
        registry = CollectorRegistry()
        histogram = Histogram("v", "values", buckets=VALUE_BUCKETS, registry=registry)
        observe(histogram, values)
        samples = {}
        for line in generate_latest(registry).decode().splitlines():
            if line.startswith("v_"):
                name, value = line.rsplit(" ", 1)
                samples[name] = float(value)
        return samples

    def one_by_one(histogram: Histogram, values: list[float]) -> None:
        for value in values:
            histogram.observe(value)

    each, bulk = exposed(one_by_one), exposed(observe_each)
    assert each.keys() == bulk.keys()
    for name, value in each.items():
        if name == "v_sum":
            assert bulk[name] == pytest.approx(value, rel=1e-12, nan_ok=True)
        elif not name.startswith("v_created"):
            assert bulk[name] == value, name
