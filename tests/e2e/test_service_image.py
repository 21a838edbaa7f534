"""The service image for real: a Bento of a tiny registered model, containerized by `tabula images
--backend podman` on the local Debian base image, then run by `podman kube play` from the Deployment
and ConfigMap that `helm template charts/tabula` renders (user, read-only root, emptyDir, env, port).

The test reaches the pod at its own address on podman's network, not through a host port: a port
picked free can be taken by another test's server before podman binds it, and the test then talks to
that server (a CI run once read another model's run_id that way). podman turns the probes into
healthchecks that need systemd timers (absent here), so the test polls /readyz itself.
The image must stay under SIZE_BUDGET_BYTES and start without compiling a module. Run with `-s` to
see its size, layers, build time and the time from container start to /readyz 200."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from contracts.artifacts import GOLDEN_SET_FILE, GoldenSet
from tests.chart.helm import CHART_DIR, helm_binary
from tests.e2e.conftest import SESSION_TAG, podman, removing_build_leftovers
from tests.e2e.test_images import BASE_IMAGE
from tests.integration.service import conftest as service_fixtures
from tests.integration.service.conftest import RegisteredModel, run_cli
from tests.support import VENV_BIN, service_env

# Fixtures shared with the service tests, made visible to this module by name.
registered_model = service_fixtures.registered_model
bentoml_home = service_fixtures.bentoml_home

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RELEASE = f"tabula-{SESSION_TAG}"
GIT_SHA = SESSION_TAG
# A ConfigMap value the image does not set itself (its Dockerfile sets 1000), to see the chart's env arrive.
MAX_BATCH_ROWS = 7
# BentoML's image user, which the chart's podSecurityContext names (docs/architecture.md).
BENTO_UID = 1034
# The host's CA bundle, mounted into the build so pip and uv trust this machine's TLS proxy.
MACHINE_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Budget of the image (podman's Size, decimal MB); BentoML's stock template made about 1.3 GB.
SIZE_BUDGET_BYTES = 600 * 10**6
# A hung or crash-looping start fails; 10 s is the goal (see /readyz timing printed with -s), but a
# bound that tight is not robust on a loaded 2-core machine.
READY_BOUND_SECONDS = 60


@dataclass(frozen=True)
class PlayedPod:
    base_url: str
    container: str
    manifest: dict[str, Any]


@dataclass(frozen=True)
class ServiceImage:
    ref: str
    size: int


@pytest.fixture(scope="module")
def image_bento(base_images: str, registered_model: RegisteredModel, bentoml_home: Path) -> str:
    """`tabula build` of the production alias with the local base image written into the Bento.

    The plain Python base, not the one with uv: the template installs uv in its build stage only."""
    env = {
        **service_env(bentoml_home, docker_base_image=BASE_IMAGE),
        "MLFLOW_TRACKING_URI": registered_model.tracking_uri,
    }
    result = run_cli(["build", "--model-name", registered_model.name], env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def service_image(
    image_bento: str, registered_model: RegisteredModel, bentoml_home: Path
) -> Iterator[ServiceImage]:
    """`tabula images --only service` with podman: `bentoml containerize` of the Bento."""
    ref = f"localhost/tabula-service:{registered_model.version}-{GIT_SHA}"
    with removing_build_leftovers():
        started = time.monotonic()
        result = subprocess.run(
            [str(VENV_BIN / "tabula"), "images", "--only", "service", "--backend", "podman",
             "--bento", image_bento, "--registry", "localhost", "--git-sha", GIT_SHA,
             "--network", "host", "--ca-bundle", str(MACHINE_CA_BUNDLE)],
            env=service_env(bentoml_home), capture_output=True, text=True, timeout=1200, check=False,
        )  # fmt: skip
        build_seconds = time.monotonic() - started
        try:
            assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
            # The tag carries the model version read from the Bento's label.
            assert result.stdout.strip().splitlines()[-1] == ref
            inspected = podman("image", "inspect", "--format", "{{.Size}}", ref)
            assert inspected.returncode == 0, inspected.stderr
            size = int(inspected.stdout.strip())
            print(f"\nservice image {ref}: {size / 1e6:.0f} MB, built in {build_seconds:.0f} s")
            print(layer_breakdown(ref))
            yield ServiceImage(ref, size)
        finally:
            podman("rmi", "--force", ref)


def layer_breakdown(ref: str) -> str:
    """The image's non-empty layers, newest first: size and the start of the instruction."""
    history = podman("history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", ref)
    assert history.returncode == 0, history.stderr
    layers = [line.split("\t", 1) for line in history.stdout.splitlines()]
    return "\n".join(
        f"  {size:>9}  {' '.join(created.split())[-110:]}" for size, created in layers if size != "0 B"
    )


def render_pod_manifests(image: str) -> list[dict[str, Any]]:
    """The chart's Deployment and ConfigMap for this image, one replica."""
    repository, tag = image.rsplit(":", 1)
    result = subprocess.run(
        [helm_binary(), "template", RELEASE, str(CHART_DIR),
         "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
         "--set", "image.pullPolicy=Never", "--set", "replicaCount=1",
         "--set", f"config.maxBatchRows={MAX_BATCH_ROWS}",
         "--show-only", "templates/configmap.yaml", "--show-only", "templates/deployment.yaml"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifests = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert sorted(m["kind"] for m in manifests) == ["ConfigMap", "Deployment"]
    return manifests


def pod_base_url(deployment: dict[str, Any], pod: str) -> str:
    """The pod's own address on podman's network (rootful podman routes it from the host)."""
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    [port] = container["ports"]
    infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", pod)
    assert infra.returncode == 0, infra.stderr
    address = podman("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                      infra.stdout.strip())  # fmt: skip
    assert address.returncode == 0, address.stderr
    assert address.stdout.strip(), f"pod {pod} has no address on podman's network"
    return f"http://{address.stdout.strip()}:{port['containerPort']}"


def server_container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


@pytest.fixture(scope="module")
def played_pod(service_image: ServiceImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlayedPod]:
    manifests = render_pod_manifests(service_image.ref)
    deployment = next(m for m in manifests if m["kind"] == "Deployment")
    kube_file = tmp_path_factory.mktemp("kube") / "service.yaml"
    kube_file.write_text(yaml.safe_dump_all(manifests, sort_keys=False), encoding="utf-8")
    try:
        played = podman("kube", "play", str(kube_file), timeout=180)
        assert played.returncode == 0, played.stdout + played.stderr
        # The output lists the pod id under "Pod:" and the one container's id under "Container:".
        pod = played.stdout.split("Pod:")[1].split()[0]
        container = played.stdout.split("Container:")[1].split()[0]
        base_url = pod_base_url(deployment, pod)
        started_at = _container_started_at(container)
        deadline = time.monotonic() + READY_BOUND_SECONDS
        while not _ready(f"{base_url}/readyz"):
            state = podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
            assert state == "running", f"container {state}:\n{podman('logs', container).stderr[-4000:]}"
            assert time.monotonic() < deadline, podman("logs", container).stderr[-4000:]
            time.sleep(0.2)
        seconds_to_ready = time.time() - started_at
        print(f"\nservice container started -> /readyz 200 in {seconds_to_ready:.1f} s")
        assert seconds_to_ready < READY_BOUND_SECONDS
        yield PlayedPod(base_url, container, deployment)
    finally:
        down = podman("kube", "down", str(kube_file), timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr


def _container_started_at(container: str) -> float:
    """The container's start time (epoch seconds), as podman recorded it."""
    result = podman("inspect", "--format", "{{.State.StartedAt.Unix}}.{{.State.StartedAt.Nanosecond}}",
                     container)  # fmt: skip
    assert result.returncode == 0, result.stderr
    seconds, nanos = result.stdout.strip().split(".")
    return int(seconds) + int(nanos) / 1e9


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _exec(container: str, *command: str) -> subprocess.CompletedProcess[str]:
    return podman("exec", container, *command)


def test_service_image_is_built_on_the_chosen_base_and_runs_as_bentoml(service_image: ServiceImage) -> None:
    inspected = podman("image", "inspect", service_image.ref)
    assert inspected.returncode == 0, inspected.stderr
    [image] = json.loads(inspected.stdout)
    assert image["Config"]["User"] == "bentoml"
    assert "3000/tcp" in image["Config"]["ExposedPorts"]
    # The bentofile's env reaches the image; the build never installs a compiler toolchain.
    assert "OMP_NUM_THREADS=1" in image["Config"]["Env"]
    base_layers = podman("image", "inspect", "--format", "{{json .RootFS.Layers}}", BASE_IMAGE)
    layers = json.loads(base_layers.stdout)
    assert image["RootFS"]["Layers"][: len(layers)] == layers, "not built on the Bento's base image"
    # service/Dockerfile.j2 leaves out the compiler toolchain BentoML's stock template installs, and
    # uv stays in its build stage.
    tools = podman("run", "--rm", "--entrypoint", "sh", service_image.ref, "-c",
                    "command -v gcc make git uv; true")  # fmt: skip
    assert tools.stdout.strip() == "", f"the service image ships build tools: {tools.stdout}"


def test_service_image_stays_within_its_size_budget(service_image: ServiceImage) -> None:
    assert service_image.size < SIZE_BUDGET_BYTES, (
        f"{service_image.size / 1e6:.0f} MB, budget {SIZE_BUDGET_BYTES / 1e6:.0f} MB:\n"
        + layer_breakdown(service_image.ref)
    )
    # What the template leaves out: installer caches and the packages' own test suites.
    leftovers = podman(
        "run", "--rm", "--user", "0", "--entrypoint", "sh", service_image.ref, "-c",
        "find /root/.cache /home/bentoml/.cache /tmp/bento-env -maxdepth 0 2>/dev/null; "
        "find /app/.venv -type d -name tests",
    )  # fmt: skip
    assert leftovers.returncode == 0, leftovers.stderr
    assert leftovers.stdout.strip() == ""


# Everything the served process imports, the prediction log's database driver included (imported only
# when the sink is on), and the model stack skops needs to load a scikit-learn pipeline.
SERVED_IMPORTS = (
    "import service.service, service.prediction_log, sqlalchemy, psycopg, sklearn.ensemble, "
    "sklearn.pipeline, sklearn.preprocessing, sklearn.linear_model, skops.io, threadpoolctl"
)


def test_service_image_imports_the_served_modules_from_precompiled_bytecode(
    service_image: ServiceImage,
) -> None:
    """Run as root on a writable root, Python would write a .pyc for every module it had to compile;
    none appears, so start-up never compiles (the pod's read-only root could not keep it anyway)."""
    script = (
        'touch /tmp/before && sleep 1 && cd "$BENTO_PATH/src" && '
        f"BENTOML_HOME=/tmp/bentoml python -c '{SERVED_IMPORTS}' && "
        "find / -xdev -name '*.pyc' -newer /tmp/before"
    )
    result = podman("run", "--rm", "--user", "0", "--entrypoint", "sh", service_image.ref, "-c", script)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "", f"compiled at start-up:\n{result.stdout[:3000]}"


def test_pod_from_the_chart_becomes_ready_and_predicts_the_golden_set(
    played_pod: PlayedPod, registered_model: RegisteredModel, tmp_path: Path
) -> None:
    import mlflow

    golden_path = mlflow.artifacts.download_artifacts(
        run_id=registered_model.run_id,
        artifact_path=GOLDEN_SET_FILE,
        dst_path=str(tmp_path),
        tracking_uri=registered_model.tracking_uri,
    )
    golden = GoldenSet.read(Path(golden_path))
    row = dict(zip(golden.feature_names, golden.rows[0], strict=True))
    response = httpx.post(f"{played_pod.base_url}/predict", json=row, timeout=10)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["prediction"] == pytest.approx(golden.predictions[0], abs=1e-9)
    assert body["model_version"] == registered_model.version

    metrics = httpx.get(f"{played_pod.base_url}/metrics", timeout=10)
    assert metrics.status_code == 200
    info = [line for line in metrics.text.splitlines() if line.startswith("tabula_model_info{")]
    assert info, metrics.text[-2000:]
    assert f'model_version="{registered_model.version}"' in info[0]
    assert f'run_id="{registered_model.run_id}"' in info[0]


def test_pod_takes_its_settings_from_the_chart_configmap(played_pod: PlayedPod) -> None:
    rows = [dict.fromkeys(("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup"), 3.0)
            | {"Latitude": 34.0, "Longitude": -118.0}] * (MAX_BATCH_ROWS + 1)  # fmt: skip
    too_many = httpx.post(f"{played_pod.base_url}/predict/batch", json={"rows": rows}, timeout=10)
    assert 400 <= too_many.status_code < 500, too_many.text
    allowed = httpx.post(f"{played_pod.base_url}/predict/batch", json={"rows": rows[:-1]}, timeout=10)
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["count"] == MAX_BATCH_ROWS


def test_pod_runs_as_the_chart_user_on_a_read_only_root(played_pod: PlayedPod) -> None:
    pod_security = played_pod.manifest["spec"]["template"]["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    identity = _exec(played_pod.container, "sh", "-c", "id -u; id -g")
    assert identity.returncode == 0, identity.stderr
    assert [int(i) for i in identity.stdout.split()] == [BENTO_UID, BENTO_UID]
    assert pod_security["runAsUser"] == pod_security["runAsGroup"] == BENTO_UID
    capabilities = podman("inspect", "--format", "{{json .EffectiveCaps}}", played_pod.container)
    assert json.loads(capabilities.stdout) in ([], None), "capabilities.drop [ALL] was not applied"

    assert server_container(played_pod.manifest)["securityContext"]["readOnlyRootFilesystem"] is True
    readonly = podman("inspect", "--format", "{{.HostConfig.ReadonlyRootfs}}", played_pod.container)
    assert readonly.stdout.strip() == "true"
    # The Bento's own folder belongs to the service user: only the read-only root can refuse the write.
    refused = _exec(played_pod.container, "sh", "-c", 'touch "$BENTO_PATH/written"')
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr
    # The emptyDir mounts stay writable: scratch for /tmp and BENTOML_HOME (set by the chart).
    env = {item["name"]: item["value"] for item in server_container(played_pod.manifest)["env"]}
    probe = 'touch /tmp/written "$BENTOML_HOME/written" && echo "$BENTOML_HOME"'
    scratch = _exec(played_pod.container, "sh", "-c", probe)
    assert scratch.stdout.strip() == env["BENTOML_HOME"], scratch.stderr
