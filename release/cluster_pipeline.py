"""``tabula pipeline --k8s``: the main job on the current cluster, built from the cluster commands.

Train as the chart's Job -> first install: build, ship and deploy the production version; installed:
release the new challenger through the closed loop (analysis, then ``production`` moves or the
rollout is rolled back) -> ``helm test`` (a prediction check, and the Locust SLO gate when
``loadTest.enabled``) -> where to look.
"""

from __future__ import annotations

from dataclasses import dataclass

from release import chart
from release.cluster import Cluster
from release.errors import ReleaseError
from release.jobs import JobReport, report_outcome, run_training_job
from release.loop import ReleaseRequest, build_and_ship, deploy, release
from training.config import TrainingSettings


@dataclass(frozen=True)
class ClusterPipelineOptions:
    strategy: str
    provider: str
    git_sha: str | None


def run(cluster: Cluster, training: TrainingSettings, options: ClusterPipelineOptions) -> JobReport:
    """Train, ship, test; returns what the training Job registered. Raises the failing step's error."""
    job = run_training_job(
        training,
        cluster.settings,
        args=["train"],
        env={},
        params_file=None,
        log=cluster.log,
        helm=cluster.helm,
        kube=cluster.kube,
    )
    report = report_outcome(training, job, cluster.log)
    if report.production is None:
        raise ReleaseError(f"the Job {job} left {training.model_name} without a production version")
    installed = cluster.values()
    if installed is None:
        image = build_and_ship(cluster, training, report.production, options.git_sha)
        cluster.log(f"first install of {cluster.release}: v{report.production} as {options.strategy}")
        deploy(cluster, image, report.production, options.strategy, options.provider)
    else:
        ship_challenger(cluster, training, options, report, chart.workload(installed, "").model_version)
    cluster.log(f"helm test {cluster.release}:")
    for line in cluster.helm.test(cluster.release).splitlines():
        cluster.log(f"  {line}")
    for line in where_to_look(cluster, training):
        cluster.log(line)
    return report


def ship_challenger(
    cluster: Cluster,
    training: TrainingSettings,
    options: ClusterPipelineOptions,
    report: JobReport,
    served: str,
) -> None:
    """Release what the Job registered, unless the cluster serves it or the offline gate judged it worse."""
    if report.version is None or report.version == served:
        cluster.log(f"the cluster already serves v{served}: nothing to release")
        return
    if report.decision == "rejected":
        cluster.log(
            f"v{report.version} lost the offline comparison to production v{report.production}: "
            f"not released; the cluster keeps serving v{served}"
        )
        return
    if options.strategy == "rollingUpdate":
        # No analysis judges a rolling update: it rolls out the version the offline gate made production.
        production = str(report.production)
        image = build_and_ship(cluster, training, production, options.git_sha)
        deploy(cluster, image, production, options.strategy, options.provider)
        return
    # The loop's evidence rule decides manual pauses, as for `tabula release`.
    request = ReleaseRequest(
        version=report.version, strategy=options.strategy, provider=options.provider, git_sha=options.git_sha
    )
    release(cluster, training, request)


def where_to_look(cluster: Cluster, training: TrainingSettings) -> list[str]:
    values = cluster.installed_values()
    namespace, name = cluster.settings.namespace, chart.fullname(values, cluster.release)
    port = chart.dig(values, "service.port", 3000)
    return [
        "where to look:",
        f"  service     kubectl -n {namespace} port-forward svc/{name} 3000:{port}",
        "              then http://127.0.0.1:3000/docs (Swagger UI) and http://127.0.0.1:3000/metrics",
        f"  rollout     tabula rollout status -n {namespace} --helm-release {cluster.release}",
        f"  MLflow      {training.tracking_uri} (tabula models --model-name {training.model_name})",
        f'  dashboard   Grafana, "Tabula model: {namespace}/{name}" (alerts: PrometheusRule {name})',
    ]
