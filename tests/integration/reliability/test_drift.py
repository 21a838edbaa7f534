"""The drift gauge against the chart's alert threshold: low for held-out rows, high for shifted ones."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from service.config import ServiceSettings
from tests.chart.helm import render_scenario
from tests.integration.reliability.conftest import CHART_SCENARIO
from tests.integration.reliability.harness import ModelVersions, payload_rows, record_figures, serving

pytestmark = [pytest.mark.load, pytest.mark.slow]

BATCH = 100
# Median income up by $30k per household: a plausible shift (inflation, a richer client base).
INCOME_SHIFT = 3.0


def drift_threshold() -> float:
    rules = render_scenario(CHART_SCENARIO).one("PrometheusRule")["spec"]["groups"]
    (rule,) = [r for group in rules for r in group["rules"] if r.get("alert") == "TabulaFeatureDrift"]
    match = re.search(r"tabula_feature_drift_psi\{.*\}\)\s*>\s*([0-9.]+)\s*$", rule["expr"].strip(), re.S)
    assert match, rule["expr"]
    return float(match[1])


def psi(base_url: str) -> dict[str, float]:
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    return {
        sample.labels["feature"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "tabula_feature_drift_psi"
    }


def send(base_url: str, rows: list[dict[str, float]]) -> None:
    for start in range(0, len(rows), BATCH):
        response = httpx.post(
            f"{base_url}/predict/batch", json={"rows": rows[start : start + BATCH]}, timeout=10
        )
        assert response.status_code == 200, response.text


def test_drift_gauge_crosses_the_alert_threshold_for_shifted_inputs_only(
    model: ModelVersions, chart_settings: dict[str, str], log_dir: Path
) -> None:
    threshold = drift_threshold()
    service = ServiceSettings(**chart_settings)  # the chart leaves the drift window at these defaults
    window, update_s = service.drift_window_size, service.drift_update_seconds
    rows = payload_rows()
    held_out = (rows * (1 + window // len(rows)))[:window]
    shifted = [{**row, "MedInc": row["MedInc"] + INCOME_SHIFT} for row in held_out]
    with serving(model.tags["stable"], model.bentoml_home, log_dir / "drift.log", **chart_settings) as s:
        send(s.base_url, held_out)
        time.sleep(update_s)
        send(s.base_url, held_out[:BATCH])  # a batch after the update interval recomputes the gauges
        in_distribution = psi(s.base_url)
        started = time.monotonic()
        sent = 0
        crossed: dict[str, float] = {}
        while time.monotonic() - started < 3 * update_s + 10:
            send(s.base_url, shifted[sent % window : sent % window + BATCH])
            sent += BATCH
            current = psi(s.base_url)
            if current.get("MedInc", 0.0) > threshold:
                crossed = current
                break
            time.sleep(0.2)
        seconds = time.monotonic() - started
    figures = {
        "threshold": threshold,
        "window_rows": window,
        "update_seconds": update_s,
        "in_distribution_max_psi": round(max(in_distribution.values()), 4),
        "in_distribution_psi": {k: round(v, 4) for k, v in in_distribution.items()},
        "shifted_rows_until_alert_level": sent,
        "shifted_seconds_until_alert_level": round(seconds, 2),
        "shifted_medinc_psi": round(crossed.get("MedInc", float("nan")), 3),
    }
    record_figures("drift", figures)
    assert set(in_distribution) == set(rows[0]), in_distribution
    assert max(in_distribution.values()) < threshold, figures
    assert crossed, f"MedInc PSI never passed {threshold}: {figures}"
    # Within the configured window: the first recomputation after the shift (one update interval) shows it.
    assert seconds <= update_s + 5, figures
