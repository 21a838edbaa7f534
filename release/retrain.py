"""``tabula train --if-changed``: retrain only when the data or the traffic moved away from the champion.

Two triggers, checked in this order: the data digest differs from the one the champion was trained on
(its run's ``data_digest`` tag), or the service's drift gauges (``tabula_feature_drift_psi``, from
Prometheus) exceed the threshold for the champion's version.
"""

from __future__ import annotations

import math

import httpx

from release.config import ReleaseSettings
from release.errors import ReleaseError
from training.config import TrainingSettings

DRIFT_METRIC = "tabula_feature_drift_psi"


def drift_by_feature(prometheus_url: str, model_name: str, version: str) -> dict[str, float]:
    """Highest PSI per feature over the champion's pods, from Prometheus' instant-query API."""
    query = f'max by (feature) ({DRIFT_METRIC}{{model_name="{model_name}", model_version="{version}"}})'
    url = f"{prometheus_url.rstrip('/')}/api/v1/query"
    try:
        response = httpx.get(url, params={"query": query}, timeout=15)
        body = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise ReleaseError(f"cannot query drift from Prometheus at {prometheus_url}: {exc}") from None
    if response.status_code != 200 or body.get("status") != "success":
        raise ReleaseError(
            f"Prometheus at {prometheus_url} refused the drift query: {body.get('error', response.text)}"
        )
    drift: dict[str, float] = {}
    for sample in body["data"]["result"]:
        value = float(sample["value"][1])
        if not math.isnan(value):
            drift[sample["metric"].get("feature", "?")] = value
    return drift


def should_train(training: TrainingSettings, settings: ReleaseSettings) -> tuple[bool, str]:
    """Whether to train now, and why, in one line."""
    from training import registry
    from training.pipeline import load_settings_dataset

    client = registry.connect(training)
    champion = registry.alias_version(client, training.model_name, registry.PRODUCTION)
    if champion is None:
        return True, f"{training.model_name} has no production version yet"
    run = registry.call(lambda: client.get_run(str(champion.run_id)), "read the champion's run")
    champion_digest = run.data.tags.get("data_digest")
    digest = load_settings_dataset(training).digest
    if digest != champion_digest:
        return True, f"data digest {digest} differs from champion v{champion.version}'s {champion_digest}"
    unchanged = f"data digest {digest} is champion v{champion.version}'s"
    if not settings.prometheus_url:
        return False, f"{unchanged}; drift not checked (TABULA_RELEASE_PROMETHEUS_URL is not set)"
    drift = drift_by_feature(settings.prometheus_url, training.model_name, str(champion.version))
    threshold = settings.drift_psi_threshold
    over = {feature: psi for feature, psi in sorted(drift.items()) if psi > threshold}
    if over:
        listed = ", ".join(f"{feature}={psi:.3f}" for feature, psi in over.items())
        return True, f"drift PSI over {threshold:g} for v{champion.version}: {listed}"
    if not drift:
        return False, f"{unchanged}; Prometheus has no drift samples for v{champion.version}"
    feature, worst = max(drift.items(), key=lambda item: item[1])
    return False, f"{unchanged}; drift below {threshold:g} (highest {feature}={worst:.3f})"
