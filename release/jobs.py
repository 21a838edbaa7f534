"""``tabula train --k8s``: the chart's training Job, rendered with the release's values, run to the end.

The Job comes from ``helm template`` (never a second copy of it). Its ServiceAccount and Role are
created alongside with Helm's ownership annotations, so a later ``helm upgrade`` adopts them. The
release's training ConfigMap is never written: this run's settings (the chart's MLflow settings plus
``--candidate`` choices) go into a ConfigMap of its own, owned by the Job, as does a params file, so
the CronJob and later runs never inherit them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from release import chart
from release.config import ReleaseSettings
from release.errors import ClusterTimeoutError, ReleaseError
from release.helm import Helm
from release.kube import MERGE_PATCH, Deadline, Kube, connect, iter_lines, pod_problem, termination
from training.config import TrainingSettings

SUPPORT_KINDS = ("ServiceAccount", "Role", "RoleBinding")
PARAMS_MOUNT = "/etc/tabula/params"
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


@dataclass(frozen=True)
class JobReport:
    """What the Job left in the registry, read back from MLflow."""

    job: str
    version: str | None
    decision: str | None
    reason: str | None
    production: str | None


def job_overrides(training: TrainingSettings, settings: ReleaseSettings) -> dict[str, Any]:
    """Values that turn the Job on and carry this command's choices into it."""
    # The Job trains the example these settings name, and the chart judges it for the example's task.
    overrides = chart.merge(
        chart.nested("training.jobEnabled", True),
        chart.nested("model.name", training.model_name),
        chart.nested("model.example", training.example),
        chart.nested("model.task", training.resolved_example.spec.task),
        chart.nested("training.mlflow.experiment", training.experiment),
    )
    if settings.training_image:
        try:
            repository, tag = chart.split_image(settings.training_image)
        except ValueError as exc:
            raise ReleaseError(f"TABULA_RELEASE_TRAINING_IMAGE: {exc}") from None
        overrides = chart.merge(overrides, {"training": {"image": {"repository": repository, "tag": tag}}})
    return overrides


@dataclass(frozen=True)
class RenderedJob:
    """What the chart renders for one training run."""

    support: list[dict[str, Any]]
    settings: dict[str, str]
    job: dict[str, Any]


def render_job(helm: Helm, settings: ReleaseSettings, overrides: dict[str, Any]) -> RenderedJob:
    """The training support objects, the training ConfigMap's settings and the Job, as the chart renders
    them with the release's values."""
    installed = helm.get_values(settings.release_name, computed=False) or {}
    objects = helm.template(
        settings.release_name, settings.chart, installed, settings.values_files, overrides
    )
    training = [
        obj
        for obj in objects
        if obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "training"
    ]
    jobs = [obj for obj in training if obj["kind"] == "Job"]
    if len(jobs) != 1:
        raise ReleaseError(f"the chart rendered {len(jobs)} training Jobs, expected one")
    [config] = [obj for obj in training if obj["kind"] == "ConfigMap"]
    return RenderedJob(
        support=[obj for obj in training if obj["kind"] in SUPPORT_KINDS],
        settings=dict(config.get("data") or {}),
        job=jobs[0],
    )


def prepare_job(
    rendered: RenderedJob, stamp: str, args: list[str], env: dict[str, str], params: str | None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """This run's Job (unique name, its arguments, created suspended) and its own ConfigMaps: the
    chart's training settings with this run's ``env``, and the params file when one is given."""
    job = rendered.job
    name = f"{job['metadata']['name'][: 62 - len(stamp)].rstrip('-')}-{stamp}"
    job["metadata"]["name"] = name
    # A Helm hook when Helm installs it; created here, it is an ordinary Job of this run.
    job["metadata"].pop("annotations", None)
    # Kubernetes docs, concepts/workloads/controllers/job "Suspending a Job": no pod starts until
    # spec.suspend is false, so the pod never sees its ConfigMaps missing.
    job["spec"]["suspend"] = True
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    container["args"] = args
    labels = dict(job["metadata"]["labels"])
    settings_map: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{name[:58]}-env", "labels": labels},
        "data": {**rendered.settings, **env},
    }
    container["envFrom"] = [{"configMapRef": {"name": settings_map["metadata"]["name"]}}]
    config_maps = [settings_map]
    if params is not None:
        params_map: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name[:55]}-params", "labels": labels},
            "data": {"params.yaml": params},
        }
        config_maps.append(params_map)
        pod.setdefault("volumes", []).append(
            {"name": "params", "configMap": {"name": params_map["metadata"]["name"]}}
        )
        container.setdefault("volumeMounts", []).append(
            {"name": "params", "mountPath": PARAMS_MOUNT, "readOnly": True}
        )
        container.setdefault("env", []).append(
            {"name": "TABULA_PARAMS_FILE", "value": f"{PARAMS_MOUNT}/params.yaml"}
        )
    return job, config_maps


def adopt_by_helm(obj: dict[str, Any], settings: ReleaseSettings) -> dict[str, Any]:
    """Helm's ownership annotations, so ``helm upgrade`` takes the object over instead of refusing it."""
    annotations = obj["metadata"].setdefault("annotations", {})
    annotations["meta.helm.sh/release-name"] = settings.release_name
    annotations["meta.helm.sh/release-namespace"] = settings.namespace
    return obj


def run_training_job(
    training: TrainingSettings,
    settings: ReleaseSettings,
    *,
    args: list[str],
    env: dict[str, str],
    params_file: Path | None,
    log: Callable[[str], None],
    helm: Helm | None = None,
    kube: Kube | None = None,
) -> str:
    """Create the Job, stream its logs, wait for it; returns the Job name or raises with the pod's reason."""
    from kubernetes import client

    helm = helm or Helm.from_settings(settings)
    rendered = render_job(helm, settings, job_overrides(training, settings))
    kube = kube or connect(settings)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    params = params_file.read_text(encoding="utf-8") if params_file else None
    job, config_maps = prepare_job(rendered, stamp, args, env, params)
    name = str(job["metadata"]["name"])
    for obj in rendered.support:
        kube.create_or_replace(adopt_by_helm(obj, settings))
    body: Any = client.V1Job.from_dict(job)
    created = kube.json(
        lambda: kube.batch.create_namespaced_job(settings.namespace, body, _preload_content=False),
        f"create Job {name} in namespace {settings.namespace}",
    )
    log(f"created Job {name} in namespace {settings.namespace} (image {job_image(job)})")
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": created["metadata"]["uid"]}
    for config_map in config_maps:
        # Owned by the Job: Kubernetes' garbage collector deletes them with it.
        config_map["metadata"]["ownerReferences"] = [owner]
        kube.create_or_replace(config_map)
    log(f"settings of this run in ConfigMap {config_maps[0]['metadata']['name']}")
    if params_file is not None:
        log(f"mounted {params_file} as ConfigMap {config_maps[-1]['metadata']['name']}")
    kube.call(
        lambda: kube.batch.patch_namespaced_job(
            name,
            settings.namespace,
            {"spec": {"suspend": False}},
            _content_type=MERGE_PATCH,
            _preload_content=False,
        ),
        f"start Job {name}",
    )
    follow_job(kube, name, Deadline(settings.timeout_seconds, settings.poll_seconds), log)
    return name


def job_image(job: dict[str, Any]) -> str:
    return str(job["spec"]["template"]["spec"]["containers"][0]["image"])


def follow_job(kube: Kube, name: str, deadline: Deadline, log: Callable[[str], None]) -> None:
    """Stream every pod's log once, until the Job completes or fails."""
    streamed: set[str] = set()
    hint = f" (the Job keeps running: `kubectl logs -n {kube.namespace} job/{name} -f`)"
    while True:
        job = kube.json(
            lambda: kube.batch.read_namespaced_job(name, kube.namespace, _preload_content=False),
            f"read Job {name}",
        )
        pods = kube.pods(f"{JOB_NAME_LABEL}={name}")
        for pod in pods:
            if problem := pod_problem(pod):
                kube.call(
                    lambda: kube.batch.delete_namespaced_job(
                        name, kube.namespace, propagation_policy="Background", _preload_content=False
                    ),
                    f"delete Job {name}",
                )
                raise ReleaseError(f"training Job {name} cannot start, so it was deleted: {problem}")
            pod_name = pod["metadata"]["name"]
            if pod_name not in streamed and pod.get("status", {}).get("phase") in {
                "Running",
                "Succeeded",
                "Failed",
            }:
                streamed.add(pod_name)
                stream_logs(kube, pod_name, deadline, log, hint)
        conditions = {
            c["type"]: c for c in job.get("status", {}).get("conditions", []) if c.get("status") == "True"
        }
        if "Complete" in conditions:
            log(f"Job {name} succeeded")
            return
        if "Failed" in conditions:
            failed = conditions["Failed"]
            reasons = [reason for pod in pods if (reason := termination(pod) or pod_problem(pod))]
            detail = reasons[-1] if reasons else f"{failed.get('reason')}: {failed.get('message', '')}"
            if failed.get("reason") == "DeadlineExceeded":
                detail = f"ran past activeDeadlineSeconds (training.activeDeadlineSeconds); {detail}"
            raise ReleaseError(f"training Job {name} failed: {detail}")
        deadline.sleep(f"training Job {name}", hint)


def stream_logs(kube: Kube, pod: str, deadline: Deadline, log: Callable[[str], None], hint: str) -> None:
    import urllib3

    log(f"--- logs of pod {pod} ---")
    response: Any = kube.call(
        lambda: kube.core.read_namespaced_pod_log(
            pod,
            kube.namespace,
            follow=True,
            _preload_content=False,
            _request_timeout=(10, max(deadline.remaining(), 1)),
        ),
        f"read the logs of pod {pod}",
    )
    try:
        for line in iter_lines(response):
            log(f"  | {line}")
    except urllib3.exceptions.ReadTimeoutError:
        raise ClusterTimeoutError(
            f"timed out after {deadline.seconds:.0f}s following pod {pod}{hint}"
        ) from None
    finally:
        response.release_conn()


def read_outcome(training: TrainingSettings, job: str) -> JobReport:
    """The challenger the Job registered and the gate's decision, from MLflow."""
    from training import registry

    client = registry.connect(training)
    challenger = registry.alias_version(client, training.model_name, registry.CHALLENGER)
    production = registry.alias_version(client, training.model_name, registry.PRODUCTION)
    if challenger is None:
        return JobReport(job, None, None, None, production.version if production else None)
    tags = challenger.tags or {}
    return JobReport(
        job=job,
        version=str(challenger.version),
        decision=tags.get(registry.DECISION_TAG),
        reason=tags.get("promotion.reason"),
        production=str(production.version) if production else None,
    )


def train_on_cluster(
    training: TrainingSettings,
    *,
    if_changed: bool,
    params_file: Path | None,
    candidates: list[str] | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """``tabula train --k8s``: run the Job and report what it registered."""
    import json

    from release.config import load_settings

    if training.data_path is not None:
        raise ReleaseError(
            "--data names a local file; the cluster Job reads TABULA_DATA_PATH from the chart's training.env"
        )
    settings = load_settings(base_values_files=training.resolved_example.chart_values_files)
    env = {"TABULA_CANDIDATES": json.dumps(candidates)} if candidates else {}
    args = ["train", "--if-changed"] if if_changed else ["train"]
    job = run_training_job(training, settings, args=args, env=env, params_file=params_file, log=log)
    return asdict(report_outcome(training, job, log))


def report_outcome(training: TrainingSettings, job: str, log: Callable[[str], None]) -> JobReport:
    """Read what the Job registered from MLflow and say it in one line."""
    report = read_outcome(training, job)
    if report.version is None:
        log(f"{training.model_name} has no challenger: the Job registered nothing")
    else:
        log(
            f"{training.model_name} v{report.version} is the challenger; promotion: {report.decision}"
            f" ({report.reason}); production: v{report.production}"
        )
    return report
