"""The chart's training Job, run by `podman kube play` under its real pod: the Job that `helm template`
renders with default values (no TABULA_DATA_PATH, so training calls fetch_california_housing()) is
turned into the Pod its controller would create (Kubernetes docs, concepts/workloads/controllers/job:
one Pod from `spec.template`), with its ConfigMap, user, read-only root, dropped capabilities and
emptyDirs. The data cannot be downloaded here, so the container runs the training image's Python through
scikit-learn's own path up to the download: get_data_home() creates $SCIKIT_LEARN_DATA and a file is
written there, while the old default, ~/scikit_learn_data on the read-only root, is refused.
tests/e2e/test_images.py mounts TABULA_DATA_PATH everywhere, which hid that failure."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.helm import CHART_DIR, helm_binary
from tests.e2e.conftest import SESSION_TAG, BuiltImage, podman

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RELEASE = f"tabula-train-{SESSION_TAG}"
PROBE = """
import errno, os, pathlib
from sklearn.datasets import fetch_california_housing, get_data_home

home = get_data_home()  # creates the directory, as fetch_california_housing() does first
assert home == os.environ["SCIKIT_LEARN_DATA"], home
pathlib.Path(home, "probe.bin").write_bytes(b"x" * 65536)
try:
    fetch_california_housing(data_home=home, download_if_missing=False)
except OSError as exc:  # the download is the only step left
    print("DOWNLOAD-ONLY", exc)
try:
    get_data_home(os.path.expanduser("~/scikit_learn_data"))
except OSError as exc:
    print("HOME-REFUSED", errno.errorcode[exc.errno])
print("DATA-HOME", home, os.stat(home).st_uid, os.getuid())
"""


def job_as_pod(image: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The chart's training ConfigMap and the Pod of its Job, default values but the image."""
    repository, tag = image.rsplit(":", 1)
    result = subprocess.run(
        [helm_binary(), "template", RELEASE, str(CHART_DIR), "--set", "training.jobEnabled=true",
         "--set", f"training.image.repository={repository}", "--set", f"training.image.tag={tag}",
         "--set", "training.image.pullPolicy=Never", "--show-only", "templates/training.yaml"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    [job] = [o for o in objects if o["kind"] == "Job"]
    [config] = [o for o in objects if o["kind"] == "ConfigMap"]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": job["metadata"]["name"],
            "labels": job["spec"]["template"]["metadata"]["labels"],
        },
        "spec": job["spec"]["template"]["spec"],
    }
    return [config], pod


@pytest.fixture(scope="module")
def probe_output(training_image: BuiltImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Logs of the Job's pod running PROBE instead of `tabula train`; everything else as rendered."""
    support, pod = job_as_pod(training_image.ref)
    [container] = pod["spec"]["containers"]
    assert "TABULA_DATA_PATH" not in {e["name"] for e in container.get("env", [])}
    # One line: podman 4.3's YAML reader fails on a multi-line scalar here (base64 has no quotes either).
    encoded = base64.b64encode(PROBE.encode()).decode()
    container["command"], container["args"] = (
        ["python", "-c"],
        [f"import base64; exec(base64.b64decode('{encoded}'))"],
    )
    kube_file = tmp_path_factory.mktemp("kube") / "training-job.yaml"
    kube_file.write_text(yaml.safe_dump_all([*support, pod], sort_keys=False), encoding="utf-8")
    name = f"{pod['metadata']['name']}-{container['name']}"
    try:
        played = podman("kube", "play", str(kube_file), timeout=180)
        assert played.returncode == 0, played.stdout + played.stderr
        deadline = time.monotonic() + 180
        while podman("inspect", "--format", "{{.State.Status}}", name).stdout.strip() != "exited":
            assert time.monotonic() < deadline, podman("logs", name).stderr[-3000:]
            time.sleep(0.5)
        inspected = podman("inspect", "--format", "{{.State.ExitCode}} {{.HostConfig.ReadonlyRootfs}}", name)
        logs = podman("logs", name)
        exit_code, readonly = inspected.stdout.split()
        assert readonly == "true", "the pod must run on a read-only root, as the chart says"
        assert exit_code == "0", logs.stdout + logs.stderr
        yield logs.stdout
    finally:
        down = podman("kube", "down", str(kube_file), timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr


def test_the_job_pod_can_write_its_scikit_learn_data_home(probe_output: str) -> None:
    lines = dict(line.split(" ", 1) for line in probe_output.strip().splitlines())
    home, owner, uid = lines["DATA-HOME"].split()
    assert home == "/var/lib/tabula/scikit-learn"
    assert owner == uid == "10001"  # the chart's training user, not the image's
    # fetch_california_housing() got past the data home to the (unavailable) download.
    assert "Data not found" in lines["DOWNLOAD-ONLY"]


def test_the_old_default_data_home_is_read_only(probe_output: str) -> None:
    """What training did before: ~/scikit_learn_data under HOME=/home/tabula on the read-only root."""
    lines = dict(line.split(" ", 1) for line in probe_output.strip().splitlines())
    assert lines["HOME-REFUSED"] == "EROFS"


def test_the_probe_pod_is_the_rendered_job_pod(training_image: BuiltImage) -> None:
    """Only command and args differ from what the Job would run."""
    _, pod = job_as_pod(training_image.ref)
    [container] = pod["spec"]["containers"]
    assert container["args"] == ["train"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == 10001
    assert Path(container["volumeMounts"][1]["mountPath"]) == Path("/var/lib/tabula/scikit-learn")
