"""Refuse a release that would replace every serving workload at once.

Switching ``rollout.strategy`` or ``rollout.provider`` can change the workload's kind (Deployment <->
Argo Rollout) or name (``<fullname>`` <-> the native ``<fullname>-blue``/``-green``). Helm deletes the
objects a revision no longer renders as soon as it applies the new ones, and ``tabula deploy`` runs
without ``--wait``: every serving pod would go while the new ones still load their model. The chart
makes this check itself with ``lookup`` (templates/_checks.tpl ``tabula.checkWorkloadSwitch``), but
``lookup`` is empty under ``helm template`` and client-side dry runs, so the release loop calls
:func:`require_safe_switch` with the objects it rendered before it upgrades.

The procedure follows Argo Rollouts' docs/migrating.md (run the new workload next to the old one before
deleting the old one) and Helm's ``helm.sh/resource-policy: keep`` annotation (Helm leaves such an
object in place when a revision drops it).
"""

from __future__ import annotations

import json
from typing import Any

from release.errors import ReleaseError
from release.kube import Kube

KEEP_ANNOTATION = "helm.sh/resource-policy"
WORKLOAD_KINDS = ("Deployment", "Rollout")
ROLLOUT_GROUP, ROLLOUT_VERSION = "argoproj.io", "v1alpha1"
SERVER_COMPONENT = "server"


class WorkloadSwitchError(ReleaseError):
    """The release would delete every running serving workload; the message gives the safe procedure."""


def serving_workloads(objects: list[dict[str, Any]]) -> list[str]:
    """``Kind/name`` of the serving Deployments and Rollouts among rendered (or listed) objects."""
    return sorted(
        f"{obj['kind']}/{obj['metadata']['name']}"
        for obj in objects
        if obj.get("kind") in WORKLOAD_KINDS
        and (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == SERVER_COMPONENT
    )


def check_switch(running: list[str], rendered: list[str], namespace: str) -> None:
    """Raise :class:`WorkloadSwitchError` when workloads run and none of them is rendered again."""
    if not running or set(running) & set(rendered):
        return
    refs = " ".join(ref.lower() for ref in running)
    raise WorkloadSwitchError(
        f"refusing to replace the serving workload(s) {', '.join(running)} with {', '.join(rendered)}: "
        "Helm would delete the running pods before the new ones are ready (an outage). Switch safely: "
        f"1) kubectl -n {namespace} annotate {refs} {KEEP_ANNOTATION}=keep (Helm then leaves it running "
        "and this check lets the upgrade through); 2) run the upgrade again; 3) wait until the new "
        f"workload is ready and serving; 4) kubectl -n {namespace} delete {refs}"
    )


def running_workloads(kube: Kube, selector: dict[str, str]) -> list[str]:
    """The release's serving Deployments and Rollouts in the cluster, except those Helm will keep.

    ``selector`` is the release's pod selector (``app.kubernetes.io/name`` and ``/instance``); a cluster
    without the Rollout CRD simply has no Rollouts.
    """
    from kubernetes.client.exceptions import ApiException

    labels = ",".join(
        f"{key}={value}"
        for key, value in {**selector, "app.kubernetes.io/component": SERVER_COMPONENT}.items()
    )

    def rollouts() -> Any:
        try:
            return kube.custom.list_namespaced_custom_object(
                ROLLOUT_GROUP, ROLLOUT_VERSION, kube.namespace, "rollouts", label_selector=labels,
                _preload_content=False,
            )  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:  # argoproj.io is not served: no Rollouts
                return None
            raise

    found = [{**item, "kind": "Deployment"} for item in kube.deployments(labels)]
    response = kube.call(rollouts, f"list Rollouts ({labels}) in namespace {kube.namespace}")
    if response is not None:
        found += [{**item, "kind": "Rollout"} for item in json.loads(response.data).get("items", [])]
    return serving_workloads(
        [obj for obj in found if (obj["metadata"].get("annotations") or {}).get(KEEP_ANNOTATION) != "keep"]
    )


def require_safe_switch(kube: Kube, objects: list[dict[str, Any]]) -> None:
    """The release loop's check before ``helm upgrade``: ``objects`` is the ``helm template`` output
    of the values it is about to install."""
    rendered = serving_workloads(objects)
    if not rendered:
        return
    [first] = [obj for obj in objects if f"{obj['kind']}/{obj['metadata']['name']}" == rendered[0]]
    labels = first["metadata"]["labels"]
    selector = {key: labels[key] for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance")}
    check_switch(running_workloads(kube, selector), rendered, kube.namespace)
