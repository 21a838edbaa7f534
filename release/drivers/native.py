"""Native canary and blue/green (no Argo controller): tracks are plain Deployments driven by Helm values,
and the loop runs the chart's analysis itself (:mod:`release.analysis`).

Tracks (pod label ``tabula.io/track``): canary ``canary`` next to ``stable``; blue/green the idle colour
(the candidate) next to the active colour (stable).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from release import chart
from release.analysis import run_analysis
from release.cluster import Cluster
from release.drivers import Verdict, Watch
from release.errors import ClusterTimeoutError, ReleaseError
from release.evidence import Evidence, timestamp
from release.kube import Deadline, deployment_summary, ready_since

TRACK_LABEL = "tabula.io/track"


class NativeDriver(ABC):
    strategy = ""

    def __init__(self, cluster: Cluster, values: dict[str, Any] | None) -> None:
        self.cluster = cluster
        self.values = values or {}

    @property
    def mode(self) -> str:
        return f"{self.strategy}/native"

    # --- what the subclasses decide ------------------------------------------------------------
    @abstractmethod
    def tracks(self, values: dict[str, Any]) -> tuple[str, str]:
        """(candidate, stable) track names."""

    @abstractmethod
    def candidate_tag(self, values: dict[str, Any]) -> str:
        """Image tag of the candidate track ('' when there is none)."""

    @abstractmethod
    def serving_overrides(self, image: str, version: str) -> dict[str, Any]:
        """Values under which ``image`` serves every user and no candidate track is left."""

    @abstractmethod
    def candidate_overrides(self, image: str, version: str) -> dict[str, Any]:
        """Values that add a candidate track running ``image`` next to the stable one."""

    @abstractmethod
    def promotion_overrides(self, values: dict[str, Any]) -> dict[str, Any]:
        """Values under which the candidate takes all traffic."""

    @abstractmethod
    def abort_overrides(self, values: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Values that drop the candidate, and what that did."""

    @abstractmethod
    def deployments(self, values: dict[str, Any]) -> list[str]:
        """The Deployments these values render."""

    @abstractmethod
    def settle(self) -> None: ...

    @abstractmethod
    def track_lines(self, values: dict[str, Any], replicas: dict[str, int]) -> list[str]: ...

    # --- shared -----------------------------------------------------------------------------------
    def base(self) -> dict[str, Any]:
        return {"rollout": {"strategy": self.strategy, "provider": "native"}}

    def wait_ready(self, deadline: Deadline) -> str:
        values = self.cluster.installed_values()
        self.cluster.kube.wait_deployments_ready(self.deployments(values), deadline, self.cluster.log)
        return f"{self.mode} ready"

    def deploy(self, image: str, version: str, deadline: Deadline) -> str:
        self.cluster.upgrade(self.serving_overrides(image, version))
        return self.wait_ready(deadline)

    def deploy_candidate(self, image: str, version: str) -> int | None:
        _, tag = chart.split_image(image)
        if self.values and self.candidate_tag(self.values) == tag:
            return None
        repository, _ = chart.split_image(image)
        stable = chart.workload(self.values, "")
        if repository != stable.image_repository:
            raise ReleaseError(
                f"native releases keep one image repository: {repository} differs from the release's "
                f"{stable.image_repository}"
            )
        return self.cluster.upgrade(self.candidate_overrides(image, version))

    def evidence(
        self, watch: Watch, values: dict[str, Any], phase: str, message: str, records: Any
    ) -> Evidence:
        candidate, stable = self.tracks(values)
        instance = f"app.kubernetes.io/instance={self.cluster.release}"
        since = ready_since(self.cluster.kube.pods(f"{instance},{TRACK_LABEL}={candidate}"))
        window = self.cluster.clock.now() - timestamp(since) if since else None
        candidate_requests = stable_requests = None
        if watch.spec is not None and window is not None:
            candidate_requests = watch.prometheus.requests(watch.spec, candidate, window)
            stable_requests = watch.prometheus.requests(watch.spec, stable, window)
        return Evidence(
            candidate_track=candidate,
            stable_track=stable,
            window=window,
            candidate_requests=candidate_requests,
            stable_requests=stable_requests,
            run_phase=phase,
            run_message=message,
            metrics=records,
        )

    def follow(self, watch: Watch) -> Verdict:
        log = self.cluster.log
        values = self.cluster.installed_values()
        candidate, stable = self.tracks(values)
        if watch.spec is None:
            self.cluster.kube.wait_deployments_ready(self.deployments(values), watch.deadline, log)
            return Verdict(False, str(self.evidence(watch, values, "none", "", ()).verdict(None)), None)
        # A candidate gets as long to become ready as the analysis takes to measure, the time Argo's
        # background run would measure it; one that is not ready by then is no evidence, and is rolled
        # back with the rest of the command's budget rather than waited for until it runs out.
        readiness = Deadline(
            min(watch.spec.measuring_seconds(), watch.deadline.remaining()),
            watch.deadline.poll_seconds,
            self.cluster.clock,
        )
        try:
            self.cluster.kube.wait_deployments_ready(self.deployments(values), readiness, log)
        except ClusterTimeoutError as timeout:
            log(f"the candidate track {candidate} is not ready: {timeout}")
            evidence = self.evidence(watch, values, "none", "", ())
            not_ready = evidence.verdict(watch.spec) or f"no evidence: {timeout}"
            return Verdict(False, not_ready, evidence, left_paused=not watch.auto_promote)
        log(
            f"analysis of track {candidate} against {stable}: {', '.join(m.name for m in watch.spec.metrics)}"
        )
        run = run_analysis(
            watch.prometheus,
            watch.spec.metrics,
            {"candidate-track": candidate, "stable-track": stable},
            self.cluster.clock,
            log,
            watch.deadline.end,
        )
        evidence = self.evidence(watch, values, run.phase, run.message, run.metrics)
        for line in evidence.lines():
            log(line)
        if reason := evidence.verdict(watch.spec):
            return Verdict(False, reason, evidence, left_paused=not watch.auto_promote)
        summary = f"analysis passed: {', '.join(f'{r.name} {r.successful} ok' for r in evidence.metrics)}"
        if watch.auto_promote:
            log(self.take_over(watch.deadline))
            log(self.wait_ready(watch.deadline))
            return Verdict(True, summary, evidence)
        log(f"{summary}; waiting for `tabula rollout promote` (or abort)")
        tag = self.candidate_tag(values)
        while True:
            now = self.cluster.installed_values()
            if chart.workload(now, "").image_tag == tag:
                log(self.wait_ready(watch.deadline))
                return Verdict(True, f"{summary}; promoted by an operator", evidence)
            if self.candidate_tag(now) != tag:
                return Verdict(False, "aborted by an operator", evidence)
            watch.deadline.sleep("`tabula rollout promote` or abort")

    def take_over(self, deadline: Deadline) -> str:
        """The candidate takes all traffic; what that did. A canary needs one upgrade, nothing to wait for."""
        del deadline
        values = self.cluster.installed_values()
        tag = self.promoted_tag(values)
        revision = self.cluster.upgrade(self.promotion_overrides(values))
        return f"promoted {chart.dig(values, 'image.repository')}:{tag} (Helm revision {revision})"

    def promoted_tag(self, values: dict[str, Any]) -> str:
        tag = self.candidate_tag(values)
        if not tag:
            raise ReleaseError("there is no canary or preview to promote")
        return tag

    def promote(self, *, full: bool) -> str:
        del full  # the candidate takes all traffic in one step either way
        return self.take_over(self.cluster.deadline())

    def abort(self) -> str:
        overrides, what = self.abort_overrides(self.cluster.installed_values())
        revision = self.cluster.upgrade(overrides)
        return f"{what}: every user stays on the stable version (Helm revision {revision})"

    def retry(self) -> str:
        """Native releases have no aborted state to clear: re-run the upgrade with the release's values."""
        revision = self.cluster.upgrade({})
        return f"upgraded {self.cluster.release} again with its values (Helm revision {revision})"

    def undo(self, to_revision: int | None) -> str:
        self.cluster.helm.rollback(self.cluster.release, to_revision)
        return f"helm rollback {self.cluster.release} {to_revision or '(previous revision)'} done"

    def roll_back(self, revision: int, deadline: Deadline) -> None:
        self.cluster.helm.rollback(self.cluster.release, revision)
        self.cluster.log(
            f"helm rollback {self.cluster.release} {revision}: the stable version serves alone again"
        )
        self.cluster.log(self.wait_ready(deadline))

    def status(self) -> list[str]:
        values = self.cluster.installed_values()
        workload = chart.workload(values, self.cluster.release)
        lines = [
            (
                f"{workload.mode} release {self.cluster.release}: users get v{workload.model_version} "
                f"({workload.image_tag})"
            )
        ]
        replicas: dict[str, int] = {}
        for name in self.deployments(values):
            deployment = self.cluster.kube.deployment(name)
            replicas[name] = int(deployment.get("status", {}).get("availableReplicas", 0))
            lines.append(f"  Deployment {name}: {deployment_summary(deployment)}")
        return lines + self.track_lines(values, replicas)


class NativeCanary(NativeDriver):
    strategy = "canary"

    def settle(self) -> None:
        """Nothing is left after a canary's promotion: its track is gone."""

    def tracks(self, values: dict[str, Any]) -> tuple[str, str]:
        return "canary", "stable"

    def candidate_tag(self, values: dict[str, Any]) -> str:
        return str(chart.dig(values, "rollout.native.canary.tag") or "")

    def serving_overrides(self, image: str, version: str) -> dict[str, Any]:
        repository, tag = chart.split_image(image)
        return chart.merge(
            self.base(),
            {"image": {"repository": repository, "tag": tag}, "model": {"version": version}},
            {"rollout": {"native": {"canary": {"tag": "", "modelVersion": ""}}}},
        )

    def candidate_overrides(self, image: str, version: str) -> dict[str, Any]:
        _, tag = chart.split_image(image)
        return chart.merge(
            self.base(), {"rollout": {"native": {"canary": {"tag": tag, "modelVersion": version}}}}
        )

    def promotion_overrides(self, values: dict[str, Any]) -> dict[str, Any]:
        tag = self.candidate_tag(values)
        version = str(chart.dig(values, "rollout.native.canary.modelVersion") or "") or chart.version_of_tag(
            tag
        )
        return {
            "image": {"repository": chart.dig(values, "image.repository"), "tag": tag},
            "model": {"version": version},
            "rollout": {"native": {"canary": {"tag": "", "modelVersion": ""}}},
        }

    def abort_overrides(self, values: dict[str, Any]) -> tuple[dict[str, Any], str]:
        return {"rollout": {"native": {"canary": {"tag": "", "modelVersion": ""}}}}, "canary track removed"

    def deployments(self, values: dict[str, Any]) -> list[str]:
        name = chart.fullname(values, self.cluster.release)
        return [name] + (
            [chart.suffixed(values, self.cluster.release, "canary")] if self.candidate_tag(values) else []
        )

    def track_lines(self, values: dict[str, Any], replicas: dict[str, int]) -> list[str]:
        tag = self.candidate_tag(values)
        if not tag:
            return ["  no canary track"]
        if chart.dig(values, "ingress.enabled"):
            return [f"  canary {tag}: {chart.dig(values, 'rollout.native.canary.ingressWeight')}% of ingress"]
        total = sum(replicas.values()) or 1
        canary = replicas.get(chart.suffixed(values, self.cluster.release, "canary"), 0)
        return [f"  canary {tag}: weight {100 * canary // total}% ({canary}/{total} available pods)"]


@dataclass(frozen=True)
class Standby:
    """The old colour after a switch: kept at the serving size for ``delay`` seconds, then ``previewReplicas``
    goes back to ``preview_replicas``."""

    colour: str
    active: str
    pods: int
    preview_replicas: int
    delay: float


class NativeBlueGreen(NativeDriver):
    """Blue/green without a capacity drop: the promotion first scales the idle colour to the active colour's
    live size and waits until it is ready, then switches ``activeColor`` keeping that size, and
    :meth:`settle` lowers ``previewReplicas`` again after ``scaleDownDelaySeconds``. Until then the old
    colour still runs every pod, so a rollback (``tabula rollout undo``: the revision before the switch)
    only flips the Service back."""

    strategy = "blueGreen"

    def __init__(self, cluster: Cluster, values: dict[str, Any] | None) -> None:
        super().__init__(cluster, values)
        self.standby: Standby | None = None

    @staticmethod
    def preview(pods: int) -> dict[str, Any]:
        return chart.nested("rollout.native.blueGreen.previewReplicas", pods)

    def colour_deployment(self, values: dict[str, Any], colour: str) -> str:
        return chart.suffixed(values, self.cluster.release, colour)

    def serving_pods(self, values: dict[str, Any], colour: str) -> int:
        """Live ``.spec.replicas`` of the colour's Deployment: under the HPA, the count the HPA set."""
        live = self.cluster.kube.deployment(self.colour_deployment(values, colour)).get("spec", {})
        return int(live.get("replicas") or chart.dig(values, "replicaCount", 1))

    def scale_up(self, values: dict[str, Any], active: str, idle: str, deadline: Deadline) -> int:
        """Step 1: ``previewReplicas`` = the active colour's size, until the idle colour has that many
        available pods (again if the HPA grew the active colour meanwhile); returns that size."""
        idle_name = self.colour_deployment(values, idle)
        while True:
            pods = self.serving_pods(values, active)
            available = self.cluster.kube.deployment(idle_name).get("status", {}).get("availableReplicas", 0)
            if int(available) >= pods:
                return pods
            self.cluster.upgrade(self.preview(pods))
            self.cluster.kube.wait_deployments_ready([idle_name], deadline, self.cluster.log)

    def take_over(self, deadline: Deadline) -> str:
        values = self.cluster.installed_values()
        tag = self.promoted_tag(values)
        active, idle = self.colours(values)
        pods = self.scale_up(values, active, idle, deadline)
        # Step 2: the switch; the old colour keeps its pods for an instant rollback.
        revision = self.cluster.upgrade(chart.merge(self.promotion_overrides(values), self.preview(pods)))
        service = chart.fullname(values, self.cluster.release)
        selected = self.cluster.kube.service(service).get("spec", {}).get("selector", {}).get(TRACK_LABEL)
        if selected != idle:
            raise ReleaseError(
                f"Service {service} selects {TRACK_LABEL}={selected} after the switch to {idle}"
            )
        self.cluster.kube.wait_deployments_ready(
            [self.colour_deployment(values, colour) for colour in (idle, active)], deadline, self.cluster.log
        )
        delay = float(chart.dig(values, "rollout.native.blueGreen.scaleDownDelaySeconds", 0))
        preview = int(chart.dig(values, "rollout.native.blueGreen.previewReplicas", 1))
        self.standby = Standby(colour=active, active=idle, pods=pods, preview_replicas=preview, delay=delay)
        return (
            f"promoted {chart.dig(values, 'image.repository')}:{tag} (Helm revision {revision}): Service "
            f"{service} selects {idle} ({pods} pods); {active} keeps {pods} pods for an instant rollback"
        )

    def settle(self) -> None:
        """Step 3, after ``scaleDownDelaySeconds`` on the cluster's clock: the old colour back to the
        ``previewReplicas`` it had. The command waits; interrupted, the old colour stays at full size
        (``tabula rollout status`` says so). Skipped when ``activeColor`` changed meanwhile."""
        standby, self.standby = self.standby, None
        if standby is None:
            return
        log = self.cluster.log
        log(
            f"{standby.colour} keeps {standby.pods} pods for {standby.delay:g}s "
            "(rollout.native.blueGreen.scaleDownDelaySeconds): `tabula rollout undo` switches back at once"
        )
        self.cluster.clock.sleep(standby.delay)
        active, _ = self.colours(self.cluster.installed_values())
        if active != standby.active:
            log(f"activeColor is {active} again: {standby.colour} keeps its pods")
            return
        self.cluster.upgrade(self.preview(standby.preview_replicas))
        log(f"{standby.colour} scaled down to previewReplicas={standby.preview_replicas}")

    @staticmethod
    def colours(values: dict[str, Any]) -> tuple[str, str]:
        """(active, idle)."""
        active = str(chart.dig(values, "rollout.native.blueGreen.activeColor", "blue"))
        return active, "green" if active == "blue" else "blue"

    def tracks(self, values: dict[str, Any]) -> tuple[str, str]:
        active, idle = self.colours(values)
        return idle, active

    def candidate_tag(self, values: dict[str, Any]) -> str:
        _, idle = self.colours(values)
        return str(chart.dig(values, f"rollout.native.blueGreen.{idle}Tag") or "")

    def serving_overrides(self, image: str, version: str) -> dict[str, Any]:
        repository, tag = chart.split_image(image)
        active, _ = self.colours(self.values)
        return chart.merge(
            self.base(),
            {"image": {"repository": repository, "tag": tag}, "model": {"version": version}},
            chart.nested(f"rollout.native.blueGreen.{active}Tag", tag),
        )

    def candidate_overrides(self, image: str, version: str) -> dict[str, Any]:
        del version  # a colour's model version is read from its image tag
        _, tag = chart.split_image(image)
        active, idle = self.colours(self.values)
        stable = chart.workload(self.values, "")
        return chart.merge(
            self.base(),
            # Pin the active colour's tag so a changed image.tag can never move it.
            chart.nested(f"rollout.native.blueGreen.{active}Tag", stable.image_tag),
            chart.nested(f"rollout.native.blueGreen.{idle}Tag", tag),
        )

    def promotion_overrides(self, values: dict[str, Any]) -> dict[str, Any]:
        tag = self.candidate_tag(values)
        _, idle = self.colours(values)
        return chart.merge(
            {"image": {"repository": chart.dig(values, "image.repository"), "tag": tag}},
            {"model": {"version": chart.version_of_tag(tag)}},
            chart.nested("rollout.native.blueGreen.activeColor", idle),
        )

    def abort_overrides(self, values: dict[str, Any]) -> tuple[dict[str, Any], str]:
        _, idle = self.colours(values)
        return chart.nested(f"rollout.native.blueGreen.{idle}Tag", ""), f"preview colour {idle} cleared"

    def deployments(self, values: dict[str, Any]) -> list[str]:
        blue_green = chart.dig(values, "rollout.native.blueGreen", {})
        colours = [c for c in chart.COLORS if c == "blue" or blue_green.get(f"{c}Tag")]
        return [chart.suffixed(values, self.cluster.release, colour) for colour in colours]

    def track_lines(self, values: dict[str, Any], replicas: dict[str, int]) -> list[str]:
        active, idle = self.colours(values)
        tag = self.candidate_tag(values)
        lines = [f"  active colour {active}; preview {idle}: {tag or 'none'}"]
        serving = replicas.get(self.colour_deployment(values, active), 0)
        if tag and serving and replicas.get(self.colour_deployment(values, idle), 0) >= serving:
            lines.append(
                f"  {idle} runs as many pods as {active}: a switch back is instant; it scales down with "
                "rollout.native.blueGreen.previewReplicas=1"
            )
        return lines
