"""A plain rolling update of the Deployment: no candidate track, no analysis, nothing to promote."""

from __future__ import annotations

from typing import Any

from release import chart
from release.cluster import Cluster
from release.drivers import Verdict, Watch
from release.errors import ReleaseError
from release.kube import Deadline, deployment_summary

NO_ROLLOUT = "a rollingUpdate release has no rollout to {}: use `tabula rollout undo` to go back"


class RollingUpdate:
    mode = "rollingUpdate"

    def __init__(self, cluster: Cluster, values: dict[str, Any] | None) -> None:
        self.cluster = cluster
        self.values = values or {}

    def deploy(self, image: str, version: str, deadline: Deadline) -> str:
        repository, tag = chart.split_image(image)
        self.cluster.upgrade(
            {
                "image": {"repository": repository, "tag": tag},
                "model": {"version": version},
                "rollout": {"strategy": "rollingUpdate"},
            }
        )
        return self.wait_ready(deadline)

    def wait_ready(self, deadline: Deadline) -> str:
        name = chart.fullname(self.cluster.installed_values(), self.cluster.release)
        self.cluster.kube.wait_deployments_ready([name], deadline, self.cluster.log)
        return "rollingUpdate ready"

    def deploy_candidate(self, image: str, version: str) -> int | None:
        raise ReleaseError(
            "a rollingUpdate has no analysis to judge a candidate: release with --strategy canary|blueGreen"
        )

    def follow(self, watch: Watch) -> Verdict:
        raise ReleaseError("a rollingUpdate has no rollout to follow")

    def promote(self, *, full: bool) -> str:
        raise ReleaseError("a rollingUpdate release has nothing to promote")

    def settle(self) -> None:
        """Nothing was promoted."""

    def abort(self) -> str:
        raise ReleaseError(NO_ROLLOUT.format("abort"))

    def retry(self) -> str:
        raise ReleaseError(NO_ROLLOUT.format("retry"))

    def undo(self, to_revision: int | None) -> str:
        self.cluster.helm.rollback(self.cluster.release, to_revision)
        return f"helm rollback {self.cluster.release} {to_revision or '(previous revision)'} done"

    def roll_back(self, revision: int, deadline: Deadline) -> None:
        self.cluster.helm.rollback(self.cluster.release, revision)
        self.cluster.log(self.wait_ready(deadline))

    def status(self) -> list[str]:
        values = self.cluster.installed_values()
        workload = chart.workload(values, self.cluster.release)
        deployment = self.cluster.kube.deployment(workload.name)
        return [
            (
                f"rollingUpdate release {self.cluster.release}: users get v{workload.model_version} "
                f"({workload.image_tag})"
            ),
            f"  Deployment {workload.name}: {deployment_summary(deployment)}",
        ]
