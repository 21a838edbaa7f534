"""The kustomize platform manifests (k8s/) render with kubectl, validate against the Kubernetes
schemas of several versions, meet the restricted Pod Security Standard, and wire MLflow to
PostgreSQL and its artifact volume; the kind cluster config is well-formed."""

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support import REPO_ROOT, require_tool

pytestmark = pytest.mark.unit

K8S = REPO_ROOT / "k8s"
KUSTOMIZATIONS = ["base", "overlays/kind"]
KUBERNETES_VERSIONS = ["1.30.0", "1.31.0", "1.32.0", "1.33.0", "1.34.0", "1.35.0"]
POD_SPEC_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def _render(kustomization: str) -> list[dict[str, Any]]:
    result = subprocess.run(
        [require_tool("kubectl"), "kustomize", str(K8S / kustomization)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return _render(request.param)


def _by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def _containers(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = obj["spec"]["template"]["spec"]
    yield from spec.get("initContainers", [])
    yield from spec["containers"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_strictly(rendered: list[dict[str, Any]], version: str) -> None:
    for obj in rendered:
        kubernetes_validate.validate(obj, version, strict=True)


def test_a_wrong_field_is_rejected() -> None:
    """Guards the validation above: a typo in a pod spec must not pass."""
    deployment = _by_kind(_render("base"), "Deployment")["mlflow"]
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


def test_the_stack_is_complete_and_in_the_tabula_namespace(rendered: list[dict[str, Any]]) -> None:
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in rendered}
    assert {
        ("Namespace", "tabula"),
        ("Deployment", "mlflow"),
        ("Service", "mlflow"),
        ("StatefulSet", "postgres"),
        ("Service", "postgres"),
        ("PersistentVolumeClaim", "mlflow-artifacts"),
    } <= kinds
    # The generator appends a content hash, so a changed password rolls the pods that use it.
    [secret] = _by_kind(rendered, "Secret")
    assert secret.startswith("postgres-credentials-")
    for obj in rendered:
        if obj["kind"] not in CLUSTER_SCOPED_KINDS:
            assert obj["metadata"]["namespace"] == "tabula", obj["metadata"]["name"]
    namespace = _by_kind(rendered, "Namespace")["tabula"]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_pods_meet_the_restricted_pod_security_standard(rendered: list[dict[str, Any]]) -> None:
    workloads = [obj for obj in rendered if obj["kind"] in POD_SPEC_KINDS]
    assert workloads
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] > 0
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in _containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "memory" in container["resources"]["limits"]
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1], image
            assert not image.endswith(":latest"), image


def test_services_select_their_pods(rendered: list[dict[str, Any]]) -> None:
    pods = {
        name: obj["spec"]["template"]
        for kind in POD_SPEC_KINDS
        for name, obj in _by_kind(rendered, kind).items()
    }
    for name, service in _by_kind(rendered, "Service").items():
        labels = pods[name]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        ports = {port["name"] for c in pods[name]["spec"]["containers"] for port in c["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports


def test_mlflow_uses_postgres_and_serves_artifacts_from_its_volume(rendered: list[dict[str, Any]]) -> None:
    mlflow = _by_kind(rendered, "Deployment")["mlflow"]
    container = mlflow["spec"]["template"]["spec"]["containers"][0]
    args = dict(arg.removeprefix("--").partition("=")[::2] for arg in container["args"][1:])
    assert container["command"] == ["mlflow"]
    assert container["args"][0] == "server"
    assert args["backend-store-uri"] == "postgresql+psycopg://postgres:5432/$(POSTGRES_DB)"
    assert "serve-artifacts" in args
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert mounts[args["artifacts-destination"]] == "artifacts"
    volumes = {volume["name"]: volume for volume in mlflow["spec"]["template"]["spec"]["volumes"]}
    claim = volumes["artifacts"]["persistentVolumeClaim"]["claimName"]
    assert claim in _by_kind(rendered, "PersistentVolumeClaim")
    assert "mlflow.tabula.svc:5000" in args["allowed-hosts"].split(",")

    service = _by_kind(rendered, "Service")["mlflow"]
    assert [port["port"] for port in service["spec"]["ports"]] == [5000]

    # Both workloads read the generated (hash-suffixed) credentials Secret that exists in the output.
    secrets = _by_kind(rendered, "Secret")
    postgres = _by_kind(rendered, "StatefulSet")["postgres"]
    [source] = postgres["spec"]["template"]["spec"]["containers"][0]["envFrom"]
    assert source["secretRef"]["name"] in secrets
    [secret] = secrets.values()
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= secret["data"].keys()
    # MLflow gets the credentials as libpq variables, by reference, never in its arguments.
    env = {item["name"]: item for item in container_env(mlflow)}
    for name, key in (
        ("PGUSER", "POSTGRES_USER"),
        ("PGPASSWORD", "POSTGRES_PASSWORD"),
        ("POSTGRES_DB", "POSTGRES_DB"),
    ):
        reference = env[name]["valueFrom"]["secretKeyRef"]
        assert reference["name"] in secrets
        assert reference["key"] == key
    assert "envFrom" not in mlflow["spec"]["template"]["spec"]["containers"][0]
    assert not any("PASSWORD" in arg for arg in container["args"])


def container_env(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return list(workload["spec"]["template"]["spec"]["containers"][0].get("env", []))


# The distribution spec's reference grammar (github.com/distribution/reference, reference.go):
# lowercase path components, an optional registry host, an optional tag.
IMAGE_REFERENCE = re.compile(
    r"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9-]+)*(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[\w][\w.-]{0,127})?$"
)


def test_every_image_is_a_valid_reference_as_the_base_renders_it(rendered: list[dict[str, Any]]) -> None:
    """`kubectl apply -k k8s/base` on its own must give pullable names (the base once said `OWNER`)."""
    images = [c["image"] for obj in rendered if obj["kind"] in POD_SPEC_KINDS for c in _containers(obj)]
    assert images
    for image in images:
        assert IMAGE_REFERENCE.match(image), image
    assert not IMAGE_REFERENCE.match("ghcr.io/OWNER/tabula-training:0.1.0")


def test_claims_use_the_default_storage_class_unless_the_component_names_one(tmp_path: Path) -> None:
    base = _render("base")
    claims = [_by_kind(base, "PersistentVolumeClaim")["mlflow-artifacts"]["spec"]]
    claims += [t["spec"] for t in _by_kind(base, "StatefulSet")["postgres"]["spec"]["volumeClaimTemplates"]]
    assert all("storageClassName" not in claim for claim in claims)

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [os.path.relpath(K8S / "base", overlay)],
                "components": [os.path.relpath(K8S / "components" / "storage-class", overlay)],
                "configMapGenerator": [
                    {
                        "name": "storage-class",
                        "literals": ["name=fast-ssd"],
                        "options": {
                            "disableNameSuffixHash": True,
                            "annotations": {"config.kubernetes.io/local-config": "true"},
                        },
                    }
                ],
            }
        )
    )
    named = _render(str(overlay))
    assert not _by_kind(named, "ConfigMap")  # local config only, never applied
    assert (
        _by_kind(named, "PersistentVolumeClaim")["mlflow-artifacts"]["spec"]["storageClassName"] == "fast-ssd"
    )
    [template] = _by_kind(named, "StatefulSet")["postgres"]["spec"]["volumeClaimTemplates"]
    assert template["spec"]["storageClassName"] == "fast-ssd"
    for obj in named:
        kubernetes_validate.validate(obj, KUBERNETES_VERSIONS[-1], strict=True)


def test_kind_overlay_publishes_mlflow_where_the_kind_config_maps_it() -> None:
    config = yaml.safe_load((K8S / "kind" / "cluster.yaml").read_text())
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert config["kind"] == "Cluster"
    roles = [node["role"] for node in config["nodes"]]
    assert roles.count("control-plane") == 1
    assert "worker" in roles
    mappings = {m["containerPort"]: m for node in config["nodes"] for m in node.get("extraPortMappings", [])}
    for mapping in mappings.values():
        assert mapping["listenAddress"] == "127.0.0.1"

    rendered = _render("overlays/kind")
    [port] = _by_kind(rendered, "Service")["mlflow"]["spec"]["ports"]
    assert mappings[port["nodePort"]]["hostPort"] == 5000
    images = {c["image"] for obj in rendered if obj["kind"] in POD_SPEC_KINDS for c in _containers(obj)}
    assert "localhost/tabula-training:dev" in images
