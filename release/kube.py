"""Kubernetes API access with the ``kubernetes`` client: connection, readable errors, CRD checks, objects.

Responses are read as plain JSON dicts (``_preload_content=False``): custom resources are dicts anyway,
and every caller then handles one shape.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from release.config import ReleaseSettings
from release.errors import ClusterTimeoutError, ReleaseError

T = TypeVar("T")
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
# Container states that never fix themselves without a change from the user.
STUCK_WAITING = {
    "ImagePullBackOff": "the image cannot be pulled (wrong name or tag, not pushed, or no pull secret)",
    "ErrImagePull": "the image cannot be pulled (wrong name or tag, not pushed, or no pull secret)",
    "InvalidImageName": "the image reference is invalid",
    "CreateContainerConfigError": "the container configuration is invalid (missing ConfigMap or Secret?)",
    "CrashLoopBackOff": "the container keeps crashing",
}
# Custom API groups the chart may render, what provides them, and how to do without them.
MISSING_GROUP_HINTS = {
    "argoproj.io": (
        "Argo Rollouts is not installed: `kubectl create namespace argo-rollouts && kubectl apply -n "
        "argo-rollouts -f https://github.com/argoproj/argo-rollouts/releases/latest/download/install.yaml`,"
        " or release without it: --provider native (rollout.provider=native) or --strategy rollingUpdate"
    ),
    "monitoring.coreos.com": (
        "the prometheus-operator CRDs (ServiceMonitor, PrometheusRule) are not installed: install "
        "kube-prometheus-stack (`helm install kube-prometheus-stack oci://ghcr.io/prometheus-community/"
        "charts/kube-prometheus-stack -n monitoring --create-namespace`), or switch them off with "
        "--set monitoring.enabled=false"
    ),
}


def kubeconfig_present() -> bool:
    paths = os.environ.get("KUBECONFIG", "")
    if paths:
        return any(Path(path).is_file() for path in paths.split(os.pathsep) if path)
    return (Path.home() / ".kube" / "config").is_file()


def describe_api_error(exc: Any, what: str) -> str:
    """One line for an ``ApiException``: the server's own message plus what to do about it."""
    message = exc.reason or ""
    with contextlib.suppress(ValueError, AttributeError):
        message = json.loads(exc.body or "{}").get("message") or message
    status = exc.status
    if status == 401:
        return f"cannot {what}: the cluster refused the credentials of the current kube-context ({message})"
    if status == 403:
        return f"cannot {what}: forbidden by RBAC: {message} (ask for a Role that grants it)"
    if status == 404:
        return f"cannot {what}: not found: {message}"
    return f"cannot {what}: HTTP {status} {message}"


@dataclass
class Kube:
    """Typed API groups of one client, plus the namespace and where it points."""

    api: Any
    namespace: str
    where: str

    def __post_init__(self) -> None:
        from kubernetes import client

        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.batch = client.BatchV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def call(self, action: Callable[[], T], what: str) -> T:
        """Run one API call; HTTP and transport failures become one :class:`ReleaseError` line."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            return action()
        except ApiException as exc:
            raise ReleaseError(describe_api_error(exc, what)) from None
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ReleaseError(
                f"cannot reach the Kubernetes API at {self.where} to {what}: {reason}"
            ) from None

    def json(self, action: Callable[[], Any], what: str) -> dict[str, Any]:
        """A call made with ``_preload_content=False``, decoded."""
        response = self.call(action, what)
        decoded: dict[str, Any] = json.loads(response.data)
        return decoded

    # --- discovery -------------------------------------------------------------------------------
    def require_kinds(self, objects: list[dict[str, Any]]) -> None:
        """Fail with the fix when a rendered object's custom kind is not served by the cluster."""
        from kubernetes.client.exceptions import ApiException

        wanted: dict[str, set[str]] = {}
        for obj in objects:
            group_version = str(obj.get("apiVersion", ""))
            group = group_version.split("/")[0] if "/" in group_version else ""
            if "." in group and not group.endswith(".k8s.io"):
                wanted.setdefault(group_version, set()).add(str(obj.get("kind")))
        for group_version, kinds in sorted(wanted.items()):
            group, version = group_version.split("/", 1)
            hint = MISSING_GROUP_HINTS.get(group, f"install the CRDs of {group}")

            def discover(group: str = group, version: str = version) -> Any:
                try:
                    return self.custom.get_api_resources(group, version, _preload_content=False)
                except ApiException as exc:
                    if exc.status == 404:
                        return None
                    raise

            served = self.call(discover, f"discover {group_version}")
            if served is None:
                raise ReleaseError(f"{', '.join(sorted(kinds))} ({group_version}) missing: {hint}")
            available = {resource.get("kind") for resource in json.loads(served.data).get("resources", [])}
            if missing := sorted(kinds - available):
                raise ReleaseError(f"{', '.join(missing)} ({group_version}) missing: {hint}")

    # --- objects ---------------------------------------------------------------------------------
    def create_or_replace(self, obj: dict[str, Any]) -> None:
        """Create a namespaced ConfigMap, ServiceAccount, Role or RoleBinding; replace it if it exists."""
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        kind, name = obj["kind"], obj["metadata"]["name"]
        apis: dict[str, tuple[Callable[..., Any], Callable[..., Any], Any]] = {
            "ConfigMap": (
                self.core.create_namespaced_config_map,
                self.core.replace_namespaced_config_map,
                client.V1ConfigMap,
            ),
            "ServiceAccount": (
                self.core.create_namespaced_service_account,
                self.core.replace_namespaced_service_account,
                client.V1ServiceAccount,
            ),
            "Role": (self.rbac.create_namespaced_role, self.rbac.replace_namespaced_role, client.V1Role),
            "RoleBinding": (
                self.rbac.create_namespaced_role_binding,
                self.rbac.replace_namespaced_role_binding,
                client.V1RoleBinding,
            ),
        }
        create, replace, model = apis[kind]
        body = model.from_dict(obj)

        def created() -> bool:
            try:
                create(self.namespace, body, _preload_content=False)
            except ApiException as exc:
                if exc.status == 409:
                    return False
                raise
            return True

        if not self.call(created, f"create {kind} {name} in namespace {self.namespace}"):
            self.call(
                lambda: replace(name, self.namespace, body, _preload_content=False), f"replace {kind} {name}"
            )

    def pods(self, selector: str) -> list[dict[str, Any]]:
        listing = self.json(
            lambda: self.core.list_namespaced_pod(
                self.namespace, label_selector=selector, _preload_content=False
            ),
            f"list pods ({selector}) in namespace {self.namespace}",
        )
        items: list[dict[str, Any]] = listing.get("items", [])
        return sorted(items, key=lambda pod: str(pod["metadata"].get("creationTimestamp", "")))

    def deployment(self, name: str) -> dict[str, Any]:
        return self.json(
            lambda: self.apps.read_namespaced_deployment(name, self.namespace, _preload_content=False),
            f"read Deployment {name} in namespace {self.namespace}",
        )

    def service(self, name: str) -> dict[str, Any]:
        return self.json(
            lambda: self.core.read_namespaced_service(name, self.namespace, _preload_content=False),
            f"read Service {name} in namespace {self.namespace}",
        )

    def deployments(self, selector: str) -> list[dict[str, Any]]:
        listing = self.json(
            lambda: self.apps.list_namespaced_deployment(
                self.namespace, label_selector=selector, _preload_content=False
            ),
            f"list Deployments in namespace {self.namespace}",
        )
        items: list[dict[str, Any]] = listing.get("items", [])
        return sorted(items, key=lambda item: str(item["metadata"]["name"]))

    def wait_deployments_ready(
        self, names: list[str], deadline: Deadline, log: Callable[[str], None]
    ) -> None:
        """Until every Deployment has rolled out; fails fast when a pod cannot start."""
        pending = list(names)
        while pending:
            for name in list(pending):
                deployment = self.deployment(name)
                if deployment_ready(deployment):
                    log(f"Deployment {name} is ready ({deployment_summary(deployment)})")
                    pending.remove(name)
                    continue
                selector = ",".join(
                    f"{key}={value}" for key, value in deployment["spec"]["selector"]["matchLabels"].items()
                )
                for pod in self.pods(selector):
                    if problem := pod_problem(pod):
                        raise ReleaseError(f"Deployment {name} cannot become ready: {problem}")
            if pending:
                deadline.sleep(f"Deployment(s) {', '.join(pending)} to become ready")


def deployment_ready(deployment: dict[str, Any]) -> bool:
    spec, status = deployment.get("spec", {}), deployment.get("status", {})
    wanted = spec.get("replicas", status.get("replicas", 1))
    return bool(
        status.get("observedGeneration", 0) >= deployment["metadata"].get("generation", 0)
        and status.get("updatedReplicas", 0) == wanted
        and status.get("availableReplicas", 0) == wanted
        and status.get("replicas", 0) == wanted
    )


def deployment_summary(deployment: dict[str, Any]) -> str:
    status = deployment.get("status", {})
    wanted = deployment.get("spec", {}).get("replicas", status.get("replicas", 0))
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    return f"{status.get('availableReplicas', 0)}/{wanted} available, image {image}"


def pod_problem(pod: dict[str, Any]) -> str | None:
    """Why a pod cannot run, when that needs the user: image pull failures, bad config, OOM, crash loops."""
    name = pod["metadata"]["name"]
    status = pod.get("status", {})
    for container in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]:
        waiting = container.get("state", {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in STUCK_WAITING:
            detail = waiting.get("message", "").splitlines()[0] if waiting.get("message") else ""
            return f"pod {name}: {reason}: {STUCK_WAITING[reason]}; image {container.get('image')}" + (
                f" ({detail})" if detail else ""
            )
    return None


def ready_since(pods: list[dict[str, Any]]) -> str | None:
    """When the first of these pods became Ready (its condition's lastTransitionTime), or None."""
    times = [
        str(condition["lastTransitionTime"])
        for pod in pods
        for condition in pod.get("status", {}).get("conditions", [])
        if condition.get("type") == "Ready"
        and condition.get("status") == "True"
        and condition.get("lastTransitionTime")
    ]
    return min(times) if times else None


def termination(pod: dict[str, Any]) -> str | None:
    """How a pod's container ended badly: OOMKilled, a non-zero exit code, or an eviction."""
    status = pod.get("status", {})
    if status.get("reason") == "Evicted":
        return f"pod {pod['metadata']['name']} was evicted: {status.get('message', '')}"
    for container in status.get("containerStatuses", []):
        ended = container.get("state", {}).get("terminated") or container.get("lastState", {}).get(
            "terminated"
        )
        if not ended or ended.get("exitCode", 0) == 0:
            continue
        if ended.get("reason") == "OOMKilled":
            return (
                f"pod {pod['metadata']['name']}: container {container['name']} was OOMKilled "
                "(raise training.resources.limits.memory)"
            )
        return (
            f"pod {pod['metadata']['name']}: container {container['name']} exited with code "
            f"{ended.get('exitCode')} ({ended.get('reason', 'Error')})"
        )
    return None


class Clock(Protocol):
    """Where the release loop reads the time and waits; tests pass an accelerated one."""

    def now(self) -> float:
        """Epoch seconds."""
        ...

    def sleep(self, seconds: float) -> None: ...


class WallClock:
    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class Deadline:
    """A budget (on the given clock) shared by the steps of one command."""

    def __init__(self, seconds: float, poll_seconds: float, clock: Clock | None = None) -> None:
        self.seconds = seconds
        self.poll_seconds = poll_seconds
        self.clock = clock or WallClock()
        self.end = self.clock.now() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - self.clock.now())

    def sleep(self, waiting_for: str, hint: str = "") -> None:
        """Sleep one poll interval, or raise :class:`ClusterTimeoutError` naming what never happened."""
        if self.remaining() <= 0:
            raise ClusterTimeoutError(f"timed out after {self.seconds:.0f}s waiting for {waiting_for}{hint}")
        self.clock.sleep(min(self.poll_seconds, self.remaining()))


def connect(settings: ReleaseSettings) -> Kube:
    """A client for the configured (or current) kube-context, or the in-cluster service account."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        if (
            settings.kube_context is None
            and os.environ.get("KUBERNETES_SERVICE_HOST")
            and not kubeconfig_present()
        ):
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            api = client.ApiClient(configuration)
        else:
            # KUBECONFIG is read now: the client captures it once, at import.
            api = config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=os.environ.get("KUBECONFIG") or None, context=settings.kube_context
            )
    except (ConfigException, OSError) as exc:
        wanted = f"context {settings.kube_context!r}" if settings.kube_context else "a current context"
        raise ReleaseError(
            f"no Kubernetes context: {wanted} not found in the kubeconfig ({exc}); select one with "
            "`kubectl config use-context NAME`, point KUBECONFIG at a kubeconfig, or run inside the cluster"
        ) from None
    return Kube(api, settings.namespace, api.configuration.host)


def iter_lines(response: Any) -> Iterator[str]:
    """Lines of a streamed HTTP response (pod logs), decoded leniently."""
    buffer = b""
    for chunk in response.stream(4096, decode_content=True):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace")
    if buffer:
        yield buffer.decode("utf-8", errors="replace")
