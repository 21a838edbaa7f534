"""``train --k8s``: the chart's Job rendered by real helm, run against the fake API server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from release.config import ReleaseSettings
from release.errors import ClusterTimeoutError, ReleaseError
from release.helm import Helm
from release.jobs import run_training_job
from release.kube import Kube
from tests.unit.release.fake_helm import CHART_DEFAULTS, RecordingFakeHelm
from tests.unit.release.fake_kube import FakeKube, Request, Response
from training.config import TrainingSettings

pytestmark = pytest.mark.unit

JOBS = "/apis/batch/v1/namespaces/tabula/jobs"
PODS = "/api/v1/namespaces/tabula/pods"


def container_status(state: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "train",
        "image": "registry.example/tabula-training:7",
        "state": state,
        "lastState": last or {},
    }


def script_job(
    fake: FakeKube, pod_status: dict[str, Any], job_statuses: list[dict[str, Any]], log: str = ""
) -> None:
    """Play the Job controller: a Job gets its pod once it is not suspended (Kubernetes docs,
    concepts/workloads/controllers/job "Suspending a Job": no pods while `spec.suspend` is true), and
    its status goes through ``job_statuses``."""

    def start(name: str) -> None:
        pod = f"{name}-x7k2p"
        fake.put(
            f"{PODS}/{pod}",
            {
                "metadata": {
                    "name": pod,
                    "labels": {"batch.kubernetes.io/job-name": name},
                    "creationTimestamp": "2025-01-01T00:00:00Z",
                },
                "status": pod_status,
            },
        )
        fake.logs[pod] = log
        fake.sequences[f"{JOBS}/{name}"] = [{"status": status} for status in job_statuses]

    def on_create(request: Request) -> Response | None:
        if request.method == "PATCH" and request.path.startswith(f"{JOBS}/"):
            if request.body.get("spec", {}).get("suspend") is False:
                start(request.path.rsplit("/", 1)[-1])
            return None  # the fake's own merge patch applies it
        if request.method != "POST" or request.path != JOBS:
            return None
        name = request.body["metadata"]["name"]
        created = fake.put(f"{JOBS}/{name}", request.body)
        if not request.body["spec"].get("suspend"):
            start(name)
        return 201, created

    fake.hooks.append(on_create)


def run(settings: ReleaseSettings, helm: Helm, kube: Kube, lines: list[str], **kwargs: Any) -> str:
    options: dict[str, Any] = {"args": ["train"], "env": {}, "params_file": None} | kwargs
    return run_training_job(
        TrainingSettings(model_name="housing-price", experiment="housing"),
        settings.model_copy(update={"training_image": "registry.example/tabula-training:7"}),
        log=lines.append,
        helm=RecordingFakeHelm(helm, installed=None),
        kube=kube,
        **options,
    )


COMPLETE = {"conditions": [{"type": "Complete", "status": "True"}], "succeeded": 1}
RUNNING: dict[str, Any] = {"active": 1}


def test_creates_the_charts_job_streams_its_log_and_succeeds(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm, kube: Kube
) -> None:
    script_job(
        fake,
        {"phase": "Running", "containerStatuses": [container_status({"running": {}})]},
        [RUNNING, COMPLETE],
        log="training on data\nbest: tiny_hgb, registered as housing-price v3 (challenger)\n",
    )
    lines: list[str] = []
    name = run(settings, helm, kube, lines, env={"TABULA_CANDIDATES": '["ridge"]'})

    assert name.startswith("tabula-train-")
    posts = {request.body["kind"]: request for request in fake.made("POST")}
    assert [request.path for request in fake.made("POST")] == [
        "/api/v1/namespaces/tabula/serviceaccounts",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/tabula/roles",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/tabula/rolebindings",
        JOBS,
        "/api/v1/namespaces/tabula/configmaps",
    ]
    assert posts["ServiceAccount"].body["metadata"]["annotations"] == {
        "meta.helm.sh/release-name": "tabula",
        "meta.helm.sh/release-namespace": "tabula",
    }
    job = posts["Job"].body
    assert job["metadata"]["name"] == name
    assert "annotations" not in job["metadata"]  # the chart's hook annotations mean nothing here
    assert job["spec"]["suspend"] is True
    # This run's settings: a ConfigMap of its own, owned by the Job, never the release's.
    config_map = posts["ConfigMap"].body
    assert config_map["metadata"]["name"] == f"{name}-env"
    assert "annotations" not in config_map["metadata"]
    assert config_map["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": fake.objects[f"{JOBS}/{name}"]["metadata"]["uid"],
        }
    ]
    assert config_map["data"]["TABULA_CANDIDATES"] == '["ridge"]'
    assert config_map["data"]["TABULA_MODEL_NAME"] == "housing-price"
    assert config_map["data"]["MLFLOW_TRACKING_URI"] == CHART_DEFAULTS["training"]["mlflow"]["trackingUri"]
    assert not fake.made(path_part="/configmaps/tabula-training")
    # The Job starts only once its ConfigMaps exist.
    [start] = fake.made("PATCH")
    assert start.path == f"{JOBS}/{name}"
    assert start.body == {"spec": {"suspend": False}}
    assert fake.requests.index(start) > fake.requests.index(fake.made("POST", "/configmaps")[-1])
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "registry.example/tabula-training:7"
    assert (container["command"], container["args"]) == (["tabula"], ["train"])
    assert container["envFrom"] == [{"configMapRef": {"name": f"{name}-env"}}]
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "tabula-training"
    log_requests = fake.made("GET", "/log")
    assert [request.query.get("follow") for request in log_requests] == [["true"]]
    assert "  | best: tiny_hgb, registered as housing-price v3 (challenger)" in lines
    assert lines[-1] == f"Job {name} succeeded"


def test_existing_support_objects_are_replaced_and_the_release_configmap_is_left_alone(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm, kube: Kube
) -> None:
    release_settings = {"metadata": {"name": "tabula-training"}, "data": {"TABULA_CANDIDATES": '["hgb"]'}}
    fake.put("/api/v1/namespaces/tabula/configmaps/tabula-training", dict(release_settings))
    fake.put("/api/v1/namespaces/tabula/serviceaccounts/tabula-training", {"metadata": {"name": "x"}})
    script_job(fake, {"phase": "Succeeded"}, [COMPLETE])
    run(settings, helm, kube, [], env={"TABULA_CANDIDATES": '["ridge"]'})
    [replace] = fake.made("PUT")
    assert replace.path == "/api/v1/namespaces/tabula/serviceaccounts/tabula-training"
    # What the CronJob reads keeps the release's candidates, not this run's.
    stored = fake.objects["/api/v1/namespaces/tabula/configmaps/tabula-training"]
    assert stored["data"] == {"TABULA_CANDIDATES": '["hgb"]'}


def test_the_job_runs_with_the_charts_writable_data_home(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm, kube: Kube
) -> None:
    script_job(fake, {"phase": "Succeeded"}, [COMPLETE])
    run(settings, helm, kube, [])
    job = next(request.body for request in fake.made("POST", "/jobs"))
    container = job["spec"]["template"]["spec"]["containers"][0]
    home = next(e["value"] for e in container["env"] if e["name"] == "SCIKIT_LEARN_DATA")
    assert home in {m["mountPath"] for m in container["volumeMounts"]}


def test_a_params_file_is_mounted_from_a_configmap_owned_by_the_job(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm, kube: Kube, tmp_path: Path
) -> None:
    params = tmp_path / "bad.yaml"
    params.write_text("candidates: {}\n")
    script_job(fake, {"phase": "Succeeded"}, [COMPLETE])
    name = run(settings, helm, kube, [], params_file=params, args=["train", "--if-changed"])
    job = next(request.body for request in fake.made("POST", "/jobs"))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["train", "--if-changed"]
    assert {"name": "TABULA_PARAMS_FILE", "value": "/etc/tabula/params/params.yaml"} in container["env"]
    assert {"name": "params", "mountPath": "/etc/tabula/params", "readOnly": True} in container[
        "volumeMounts"
    ]
    params_map = fake.made("POST", "/configmaps")[-1].body
    assert params_map["metadata"]["name"] == f"{name}-params"
    assert params_map["data"] == {"params.yaml": "candidates: {}\n"}
    assert params_map["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": name,
            "uid": fake.objects[f"{JOBS}/{name}"]["metadata"]["uid"],
        }
    ]


def test_image_pull_failure_deletes_the_job_and_says_why(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm, kube: Kube
) -> None:
    waiting = {
        "waiting": {
            "reason": "ImagePullBackOff",
            "message": 'Back-off pulling image "registry.example/tabula-training:7"',
        }
    }
    script_job(fake, {"phase": "Pending", "containerStatuses": [container_status(waiting)]}, [RUNNING])
    with pytest.raises(ReleaseError) as caught:
        run(settings, helm, kube, [])
    message = str(caught.value)
    assert "cannot start, so it was deleted" in message
    assert "ImagePullBackOff: the image cannot be pulled" in message
    assert "registry.example/tabula-training:7" in message
    [delete] = fake.made("DELETE")
    assert delete.path.startswith(f"{JOBS}/tabula-train-")
    assert delete.query["propagationPolicy"] == ["Background"]


def test_oom_killed_training_is_reported(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm, kube: Kube
) -> None:
    terminated = {"terminated": {"reason": "OOMKilled", "exitCode": 137}}
    failed = {
        "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}],
        "failed": 2,
    }
    script_job(fake, {"phase": "Failed", "containerStatuses": [container_status(terminated)]}, [failed])
    with pytest.raises(
        ReleaseError, match=r"failed: pod tabula-train-.*: container train was OOMKilled \(raise training"
    ):
        run(settings, helm, kube, [])


def test_non_zero_exit_code_is_reported(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm, kube: Kube
) -> None:
    terminated = {"terminated": {"reason": "Error", "exitCode": 4}}
    failed = {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}
    script_job(
        fake,
        {"phase": "Failed", "containerStatuses": [container_status(terminated)]},
        [failed],
        log="error: MLflow down\n",
    )
    lines: list[str] = []
    with pytest.raises(ReleaseError, match=r"container train exited with code 4 \(Error\)$"):
        run(settings, helm, kube, lines)
    assert "  | error: MLflow down" in lines


def test_a_job_that_never_finishes_times_out_with_a_hint(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm, kube: Kube
) -> None:
    script_job(fake, {"phase": "Pending"}, [RUNNING])
    with pytest.raises(
        ClusterTimeoutError,
        match=r"timed out after 1s waiting for training Job tabula-train-.*`kubectl logs -n tabula job/",
    ):
        run(settings.model_copy(update={"timeout_seconds": 1.0}), helm, kube, [])


def test_missing_namespace(fake: FakeKube, settings: ReleaseSettings, helm: Helm, kube: Kube) -> None:
    fake.fail("POST", "/api/v1/namespaces/tabula/", 404, 'namespaces "tabula" not found')
    with pytest.raises(
        ReleaseError,
        match=r"^cannot create ServiceAccount tabula-training in namespace tabula: not found: "
        r'namespaces "tabula" not found$',
    ):
        run(settings, helm, kube, [])


def test_the_job_trains_the_example_the_settings_name(
    fake: FakeKube, settings: ReleaseSettings, helm: Helm, kube: Kube
) -> None:
    """`--example iris` locally: the chart's Job trains iris under its names, whatever the values say."""
    script_job(
        fake, {"phase": "Running", "containerStatuses": [container_status({"running": {}})]}, [COMPLETE]
    )
    run_training_job(
        TrainingSettings(example="iris"),
        settings.model_copy(update={"training_image": "registry.example/tabula-training:7"}),
        log=[].append,
        helm=RecordingFakeHelm(helm, installed=None),
        kube=kube,
        args=["train"],
        env={},
        params_file=None,
    )

    (config_map,) = [r.body for r in fake.made("POST") if r.body["kind"] == "ConfigMap"]
    data = config_map["data"]
    assert (data["TABULA_EXAMPLE"], data["TABULA_MODEL_NAME"], data["TABULA_EXPERIMENT"]) == (
        "iris",
        "iris-species",
        "iris",
    )
