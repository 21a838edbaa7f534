"""Real images built with podman/buildah: the local Debian base images (scripts/build-base-image.sh)
and the training image through `tabula images`, with an extra CA bundle. The image is then run
the way the chart and k8s/ run it: non-root, read-only root filesystem, all capabilities dropped,
as the `tabula` CLI and as the MLflow tracking server."""

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import FAST_CANDIDATES, write_params
from tests.e2e.conftest import TEST_CA_NAME, BuiltImage
from tests.support import REPO_ROOT, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BASE_IMAGE = "localhost/debian-python:bookworm"
UV_BASE_IMAGE = "localhost/debian-python-uv:bookworm"
# The pod settings of k8s/ and the chart: numeric non-root user, read-only root, scratch /tmp.
RESTRICTED = [
    "--user", "10001:0", "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL",  # noqa: S108 - container path
    "--security-opt", "no-new-privileges",
]  # fmt: skip


def _podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)


def _inspect(ref: str) -> dict[str, object]:
    result = _podman("image", "inspect", ref)
    assert result.returncode == 0, result.stderr
    [image] = json.loads(result.stdout)
    return dict(image)


def test_base_images_have_python_uv_and_the_machine_ca(base_images: str) -> None:
    version = _podman("run", "--rm", BASE_IMAGE, "python3", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("Python 3.11.")
    uv = _podman("run", "--rm", UV_BASE_IMAGE, "uv", "--version")
    assert uv.returncode == 0, uv.stderr
    env = _inspect(UV_BASE_IMAGE)["Config"]["Env"]  # type: ignore[index]
    assert "UV_NATIVE_TLS=1" in env
    machine_ca = _podman(
        "run", "--rm", UV_BASE_IMAGE, "test", "-s", "/usr/local/share/ca-certificates/machine-ca.crt"
    )
    assert machine_ca.returncode == 0
    # Idempotent: a second run keeps both images.
    again = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "build-base-image.sh")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("exists, keeping it") == 2


def test_training_image_runs_the_tabula_cli_as_a_restricted_user(training_image: BuiltImage) -> None:
    config = _inspect(training_image.ref)["Config"]
    assert config["User"] == "10001:0"  # type: ignore[index]
    assert config["Entrypoint"] == ["tabula"]  # type: ignore[index]
    assert config["Cmd"] == ["train"]  # type: ignore[index]
    result = _podman("run", "--rm", *RESTRICTED, training_image.ref, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "train" in result.stdout
    size = int(_inspect(training_image.ref)["Size"])  # type: ignore[call-overload]
    built = training_image.build_seconds
    print(f"training image {training_image.ref}: {size / 1e6:.0f} MB, built in {built:.0f} s")
    # The packages' test suites (about 130 MB) stay in the build stage.
    suites = _podman("run", "--rm", "--entrypoint", "find", training_image.ref, "/opt/venv", "-type", "d",
                     "-name", "tests")  # fmt: skip
    assert suites.returncode == 0, suites.stderr
    assert suites.stdout.strip() == ""


def test_training_image_trusts_the_extra_ca_bundle(training_image: BuiltImage) -> None:
    installed = _podman("run", "--rm", "--entrypoint", "cat", training_image.ref,
                        "/usr/local/share/ca-certificates/extra-ca.crt")  # fmt: skip
    assert installed.stdout == training_image.ca_pem
    # requests (MLflow's client) reads REQUESTS_CA_BUNDLE; the CA must be in that bundle.
    probe = (
        "import os, ssl; ctx = ssl.create_default_context(cafile=os.environ['REQUESTS_CA_BUNDLE']); "
        "print(sorted(dict(x[0] for x in c['subject'])['commonName'] for c in ctx.get_ca_certs() "
        "if any(k == 'commonName' for x in c['subject'] for k, _ in x)))"
    )
    result = _podman("run", "--rm", *RESTRICTED, "--entrypoint", "python", training_image.ref, "-c", probe)
    assert result.returncode == 0, result.stderr
    assert TEST_CA_NAME in result.stdout


def test_training_image_serves_mlflow_like_the_k8s_deployment(training_image: BuiltImage) -> None:
    """k8s/base runs `mlflow server` from this image; here with SQLite instead of PostgreSQL,
    but the driver the manifests need must import."""
    driver = _podman("run", "--rm", *RESTRICTED, "--entrypoint", "python", training_image.ref,
                     "-c", "import psycopg, mlflow; print(mlflow.__version__)")  # fmt: skip
    assert driver.returncode == 0, driver.stderr
    port = free_port()
    name = f"tabula-mlflow-e2e-{port}"
    started = time.monotonic()
    run = _podman(
        "run", "--detach", "--name", name, *RESTRICTED, "--env", "HOME=/tmp",
        "--publish", f"127.0.0.1:{port}:5000", "--entrypoint", "mlflow", training_image.ref,
        "server", "--host=0.0.0.0", "--port=5000", "--workers=1",
        "--backend-store-uri=sqlite:////tmp/mlflow.db",
        "--serve-artifacts", "--artifacts-destination=/tmp/art",
        "--allowed-hosts=mlflow.tabula.svc:5000,localhost:*,127.0.0.1:*",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, _podman("logs", name).stderr[-2000:]
            time.sleep(0.5)
        print(f"mlflow server from the training image ready in {time.monotonic() - started:.1f} s")
        created = httpx.post(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/registered-models/create",
            json={"name": "e2e"},
            timeout=10,
        )
        assert created.status_code == 200, created.text
        # The Host check (DNS rebinding) refuses names the manifests do not list (health is exempt).
        search = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        assert httpx.get(search, timeout=5).status_code == 200
        refused = httpx.get(search, headers={"Host": "attacker.example"}, timeout=5)
        assert refused.status_code == 403
    finally:
        _podman("rm", "--force", name, timeout=60)


def test_training_image_trains_and_registers_on_a_host_mlflow(
    training_image: BuiltImage, mlflow_url: str, data_path: Path, tmp_path: Path
) -> None:
    """The training Job's container as the chart runs it (restricted, config only from env vars)
    against an MLflow server on the host: a new registered version appears."""
    from mlflow import MlflowClient

    params = write_params(tmp_path / "params.yaml", candidates={"ridge": FAST_CANDIDATES["ridge"]})
    model_name = f"tabula-e2e-{tmp_path.name}"
    client = MlflowClient(mlflow_url)
    started = time.monotonic()
    result = _podman(
        "run", "--rm", "--network", "host", *RESTRICTED,
        "--volume", f"{data_path}:/data/tabula.csv.gz:ro", "--volume", f"{params}:/config/params.yaml:ro",
        "--env", f"MLFLOW_TRACKING_URI={mlflow_url}", "--env", "TABULA_DATA_PATH=/data/tabula.csv.gz",
        "--env", "TABULA_PARAMS_FILE=/config/params.yaml", "--env", f"TABULA_MODEL_NAME={model_name}",
        training_image.ref,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    print(f"training container: registered in {time.monotonic() - started:.1f} s")
    versions = client.search_model_versions(f"name='{model_name}'")
    assert [version.version for version in versions] == ["1"]
    assert client.get_model_version_by_alias(model_name, "challenger").version == "1"
