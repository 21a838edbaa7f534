"""What Helm and the Deployment controller would do to the fake API server when a release changes.

:func:`serve_chart` makes every change of the recording fake Helm's values land in the fake API as the
REAL ``helm template`` renders it: Rollouts (spec replaced, ``metadata.generation`` bumped, status kept,
as the API server does for a spec change), AnalysisTemplates, ConfigMaps, Services and Deployments; the
Deployments are ready at once and get one Ready pod per pod template (the Deployment controller's part).

"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Callable
from typing import Any

from release import chart
from tests.fakes.clock import AnyClock
from tests.unit.release.fake_helm import CHART_DEFAULTS, RecordingFakeHelm
from tests.unit.release.fake_kube import FakeKube

NAMESPACE = "tabula"
KINDS = {
    "Rollout": "/apis/argoproj.io/v1alpha1/namespaces/{ns}/rollouts/",
    "AnalysisTemplate": "/apis/argoproj.io/v1alpha1/namespaces/{ns}/analysistemplates/",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps/",
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/",
    "Service": "/api/v1/namespaces/{ns}/services/",
}
PODS = "/api/v1/namespaces/{ns}/pods/"


def template_hash(template: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def serve_chart(
    fake: FakeKube,
    helm: RecordingFakeHelm,
    release: str,
    clock: AnyClock,
    render: Callable[[dict[str, Any]], list[dict[str, Any]]],
) -> None:
    """Apply what ``render(user values)`` returns to the fake API now and on every Helm change."""

    def on_change(_: dict[str, Any]) -> None:
        if not helm.revisions:
            return
        objects = render(helm.user_values())
        with fake.lock:
            apply(fake, objects, clock)

    helm.on_change = on_change
    on_change({})


def apply(fake: FakeKube, objects: list[dict[str, Any]], clock: AnyClock) -> None:
    wanted: dict[str, dict[str, Any]] = {}
    for obj in objects:
        if obj["kind"] in KINDS:
            wanted[KINDS[obj["kind"]].format(ns=NAMESPACE) + obj["metadata"]["name"]] = obj
    for path in [
        p for p in fake.objects if any(p.startswith(k.format(ns=NAMESPACE)) for k in KINDS.values())
    ]:
        if path not in wanted and "/configmaps/kube-root-ca" not in path:
            del fake.objects[path]
    for path, obj in wanted.items():
        current = fake.objects.get(path)
        if obj["kind"] == "Rollout":
            obj["metadata"]["generation"] = 1
            if current is not None:
                changed = current["spec"] != obj["spec"]
                obj["metadata"] = current["metadata"] | {
                    "generation": current["metadata"]["generation"] + (1 if changed else 0)
                }
                obj["status"] = current.get("status", {})
                fake.objects[path] = obj
                continue
        if obj["kind"] == "Deployment":
            ready_deployment(fake, obj, clock)
        fake.put(path, copy.deepcopy(obj))


def ready_deployment(fake: FakeKube, deployment: dict[str, Any], clock: AnyClock) -> None:
    """The Deployment controller: every replica available, one Ready pod per pod template."""
    replicas = deployment["spec"].get("replicas", 1)
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {
        "observedGeneration": 1,
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    template = deployment["spec"]["template"]
    owner = deployment["metadata"]["name"]
    name = f"{owner}.{template_hash(template)}"
    prefix = PODS.format(ns=NAMESPACE)
    for path in [
        p for p in fake.objects if p.startswith(prefix) and p[len(prefix) :].startswith(f"{owner}.")
    ]:
        if not path.endswith(name):
            del fake.objects[path]
    if prefix + name not in fake.objects:
        fake.put(
            prefix + name,
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": template["metadata"]["labels"]},
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": clock.iso()}],
                },
            },
        )


def chart_values(user_values: dict[str, Any]) -> dict[str, Any]:
    return chart.merge(CHART_DEFAULTS, user_values)


def selected_colour(fake: FakeKube, release: str = "tabula") -> tuple[str, int]:
    """Native blue/green: the colour the main Service selects and that colour's ready pods."""
    service = fake.objects[KINDS["Service"].format(ns=NAMESPACE) + release]
    colour = str(service["spec"]["selector"]["tabula.io/track"])
    deployment = fake.objects.get(KINDS["Deployment"].format(ns=NAMESPACE) + f"{release}-{colour}", {})
    return colour, int(deployment.get("status", {}).get("readyReplicas", 0))
