"""Rollout operations without Argo: the chart's native canary and blue/green, driven by Helm values."""

from __future__ import annotations

from typing import Any

from release import chart
from release.errors import ReleaseError
from release.kube import deployment_summary
from release.loop import Cluster, candidate_tag, native_promotion_overrides, server_deployments


def idle_colour(values: dict[str, Any]) -> str:
    active = str(chart.dig(values, "rollout.native.blueGreen.activeColor", "blue"))
    return "green" if active == "blue" else "blue"


def status_lines(cluster: Cluster, values: dict[str, Any]) -> list[str]:
    workload = chart.workload(values, cluster.release)
    lines = [
        (
            f"{workload.mode} release {cluster.release}: users get v{workload.model_version} "
            f"({workload.image_tag})"
        )
    ]
    names = server_deployments(values, cluster.release)
    replicas: dict[str, int] = {}
    for name in names:
        deployment = cluster.kube.deployment(name)
        replicas[name] = int(deployment.get("status", {}).get("availableReplicas", 0))
        lines.append(f"  Deployment {name}: {deployment_summary(deployment)}")
    if workload.strategy == "canary":
        tag = chart.dig(values, "rollout.native.canary.tag")
        if not tag:
            lines.append("  no canary track")
        elif chart.dig(values, "ingress.enabled"):
            lines.append(
                f"  canary {tag}: {chart.dig(values, 'rollout.native.canary.ingressWeight')}% of ingress"
            )
        else:
            total = sum(replicas.values()) or 1
            canary = replicas.get(chart.suffixed(values, cluster.release, "canary"), 0)
            lines.append(f"  canary {tag}: weight {100 * canary // total}% ({canary}/{total} available pods)")
    else:
        idle = idle_colour(values)
        lines.append(
            f"  active colour {chart.dig(values, 'rollout.native.blueGreen.activeColor')}; preview {idle}: "
            f"{chart.dig(values, f'rollout.native.blueGreen.{idle}Tag') or 'none'}"
        )
    return lines


def promote(cluster: Cluster, values: dict[str, Any]) -> str:
    tag = candidate_tag(values)
    if not tag or tag == "None":
        raise ReleaseError("there is no canary or preview to promote")
    image = f"{chart.dig(values, 'image.repository')}:{tag}"
    version = str(chart.dig(values, "rollout.native.canary.modelVersion") or "") or chart.version_of_tag(tag)
    revision = cluster.upgrade(native_promotion_overrides(values, image, version))
    return f"promoted {image} (Helm revision {revision})"


def abort(cluster: Cluster, values: dict[str, Any]) -> str:
    if chart.dig(values, "rollout.strategy") == "canary":
        overrides = {"rollout": {"native": {"canary": {"tag": "", "modelVersion": ""}}}}
        what = "canary track removed"
    else:
        overrides = chart.nested(f"rollout.native.blueGreen.{idle_colour(values)}Tag", "")
        what = f"preview colour {idle_colour(values)} cleared"
    revision = cluster.upgrade(overrides)
    return f"{what}: every user stays on the stable version (Helm revision {revision})"
