"""values.schema.json rejects bad values before anything is rendered."""

from __future__ import annotations

import pytest

from tests.chart.helm import render, scenario_file

pytestmark = pytest.mark.chart

BAD_VALUES = {
    "latest tag": ["image.tag=latest"],
    "unknown strategy": ["rollout.strategy=recreate"],
    "unknown provider": ["rollout.provider=flagger"],
    "negative replicas": ["replicaCount=-1"],
    "misspelt top-level key": ["replicas=3"],
    "misspelt nested key": ["autoscaling.maxReplica=3"],
    "root pods": ["podSecurityContext.runAsNonRoot=false"],
    "privilege escalation": ["securityContext.allowPrivilegeEscalation=true"],
    "success rate above 1": ["rollout.analysis.successRate.min=1.5"],
    "canary weight above 100": ["rollout.canary.steps[0].setWeight=150"],
    "bad duration": ["rollout.analysis.interval=one-minute"],
    "service env outside its prefix": ["config.extraEnv.MLFLOW_TRACKING_PASSWORD=secret"],
    "training env outside its prefix": ["training.env.AWS_SECRET_ACCESS_KEY=secret"],
    "zero concurrency": ["config.concurrencyLimit=0"],
    "zero admission target": ["config.admissionTargetSeconds=0"],
    "unknown admission order": ["config.admissionOrder=random"],
    "no young garbage collections": ["config.gcYoungThreshold=0"],
    "fair share not a boolean": ["config.admissionFairShare=sometimes"],
    "unknown severity": ["monitoring.rules.errorRate.severity=page"],
    "unknown colour": ["rollout.native.blueGreen.activeColor=red"],
    "relative ingress path": ["ingress.path=predict"],
    "bad cron schedule": ["training.cronJob.schedule=weekly"],
    "nginx routing without ingress": ["rollout.canary.nginxTrafficRouting=true"],
    "port out of range": ["service.port=70000"],
}


@pytest.mark.parametrize("set_values", list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_schema_rejects(helm: str, set_values: list[str]) -> None:
    result = render([scenario_file("default")], set_values)
    assert result.returncode != 0, f"accepted {set_values}"
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr


def test_schema_accepts_the_documented_overrides(helm: str) -> None:
    result = render(
        [scenario_file("default")],
        [
            "config.extraEnv.TABULA_SERVICE_LOG_LEVEL=debug",
            "training.env.TABULA_SEED=7",
            "podDisruptionBudget.minAvailable=50%",
            "image.digest=sha256:" + "a" * 64,
        ],
    )
    assert result.returncode == 0, result.stderr
    assert "@sha256:" + "a" * 64 in result.stdout
