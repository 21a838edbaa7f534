"""The one image builder: build (and optionally push) the two images; ``tabula images`` and the release
loop (``release.loop.build_and_ship``) both call :func:`build_images`.

- ``tabula-service`` from a Bento with ``bentoml containerize`` (its base image is the Bento's own
  ``docker.base_image``, chosen when the Bento is built).
- ``tabula-training`` from ``training/Containerfile``.

Both are tagged ``<model-version>-<git-sha>`` under a registry prefix (``ghcr.io/<owner>`` for
releases, ``localhost`` for local builds). The build itself runs in docker, podman or buildah.
"""

import enum
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import typer

from release.errors import ReleaseError

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTAINERFILE = REPO_ROOT / "training" / "Containerfile"
IGNOREFILE = REPO_ROOT / "training" / "Containerfile.dockerignore"
DEFAULT_REGISTRY = "ghcr.io/tabula"
DEFAULT_BASE_IMAGE = "python:3.11-slim"
SERVICE_IMAGE = "tabula-service"
TRAINING_IMAGE = "tabula-training"
DEFAULT_BENTO_NAME = "tabula"
MODEL_VERSION_LABEL = "model_version"
# The secret id training/Containerfile mounts to trust an extra CA bundle.
CA_MOUNT_ID = "extra_ca"
# Where Debian-based images keep the CA bundle that pip, uv and OpenSSL read.
IMAGE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# `bentoml containerize` (1.4) re-renders the Bento's Dockerfile template from a copy in a temporary
# folder and refuses template paths outside its working directory (bentoml/BentoML#5566): run it from
# the temporary root.
CONTAINERIZE_CWD = Path(tempfile.gettempdir())


class ImageError(ReleaseError):
    """A build cannot start or did not succeed; the message says why in one line."""

    exit_code = 6


class ImageUsageError(ImageError):
    """The options contradict each other or miss what the build needs."""

    exit_code = 2


class Backend(enum.StrEnum):
    """The program that builds and pushes images."""

    docker = "docker"
    podman = "podman"
    buildah = "buildah"


class Which(enum.StrEnum):
    """Which images to build."""

    all = "all"
    service = "service"
    training = "training"


@dataclass(frozen=True)
class BuildOptions:
    """What every build needs besides the image reference."""

    backend: Backend
    base_image: str
    ca_bundle: Path | None
    network: str | None


def image_tag(model_version: str, git_sha: str) -> str:
    """The tag both images carry; the chart reads the model version back from the part before ``-``."""
    if not model_version or "-" in model_version:
        raise ImageUsageError(f"model version {model_version!r} must be non-empty and contain no '-'")
    return f"{model_version}-{git_sha}"


def image_ref(registry: str, name: str, tag: str) -> str:
    return f"{registry.rstrip('/')}/{name}:{tag}"


def current_git_sha(repo_root: Path = REPO_ROOT) -> str:
    """The short commit id of the checkout the images are built from."""
    result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        ["git", "-C", str(repo_root), "rev-parse", "--short=12", "HEAD"],  # noqa: S607 - git from PATH
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ImageError(f"cannot read the git commit (pass --git-sha): {result.stderr.strip()}")
    return result.stdout.strip()


def resolve_bento(bento: str | None) -> tuple[str, str | None]:
    """Return the Bento tag to containerize and the model version it was labelled with.

    Without ``bento`` the newest Bento named ``DEFAULT_BENTO_NAME`` (built by ``tabula build``) is used.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        if bento is None:
            candidates = bentoml.bentos.list(DEFAULT_BENTO_NAME)
            if not candidates:
                raise ImageError(f"no Bento named {DEFAULT_BENTO_NAME!r}: run `tabula build` first")
            found = max(candidates, key=lambda b: b.info.creation_time)
        else:
            found = bentoml.bentos.get(bento)
    except NotFound as exc:
        raise ImageError(f"Bento {bento!r} not found: {exc}") from exc
    return str(found.tag), found.info.labels.get(MODEL_VERSION_LABEL)


def service_build_command(bento_tag: str, ref: str, options: BuildOptions) -> list[str]:
    """``bentoml containerize`` for the service image (run with this Python's bentoml)."""
    command = [
        sys.executable,
        "-m",
        "bentoml",
        "containerize",
        bento_tag,
        "--backend",
        options.backend.value,
        "--image-tag",
        ref,
    ]
    if options.network:
        command += ["--opt", f"network={options.network}"]
    if options.ca_bundle:
        if options.backend is Backend.docker:
            raise ImageError(
                "--ca-bundle for the service image needs --backend podman or buildah "
                "(docker builds cannot mount it); or build the Bento on a base image that trusts the CA"
            )
        # BentoML's generated Dockerfile runs pip and uv; both read the system bundle.
        # Absolute, since the command runs in another folder (see CONTAINERIZE_CWD).
        command += ["--opt", f"volume={options.ca_bundle.resolve()}:{IMAGE_CA_BUNDLE}:ro"]
    return command


def training_build_command(ref: str, options: BuildOptions, context: Path = REPO_ROOT) -> list[str]:
    """The build of ``training/Containerfile`` with the chosen backend."""
    command = [options.backend.value, "build", "--file", str(CONTAINERFILE), "--tag", ref]
    command += ["--build-arg", f"BASE_IMAGE={options.base_image}"]
    if options.backend is not Backend.docker:
        # Docker picks up Containerfile.dockerignore beside the Containerfile by itself.
        command += ["--ignorefile", str(IGNOREFILE)]
    if options.network:
        command += ["--network", options.network]
    if options.ca_bundle:
        # The digest keys the layer cache and lets the build check it received this very file.
        digest = hashlib.sha256(options.ca_bundle.read_bytes()).hexdigest()
        command += ["--secret", f"id={CA_MOUNT_ID},src={options.ca_bundle}"]
        command += ["--build-arg", f"EXTRA_CA_SHA256={digest}"]
    return [*command, str(context)]


def tag_command(ref: str, extra_ref: str, backend: Backend) -> list[str]:
    return [backend.value, "tag", ref, extra_ref]


def push_command(ref: str, backend: Backend) -> list[str]:
    return [backend.value, "push", ref]


def run(command: list[str], cwd: Path | None = None) -> None:
    """Run one build step, showing it first; a failure becomes one readable line."""
    typer.echo(f"$ {shlex.join(command)}", err=True)
    try:
        result = subprocess.run(command, cwd=cwd, check=False)  # noqa: S603 - argument list built here, no shell
    except FileNotFoundError as exc:
        raise ImageError(f"{command[0]} is not installed") from exc
    if result.returncode != 0:
        raise ImageError(f"`{shlex.join(command[:4])} ...` failed with exit code {result.returncode}")


def _check_backend(backend: Backend) -> None:
    if shutil.which(backend.value) is None:
        raise ImageError(f"build backend {backend.value!r} is not on PATH")


def build_images(
    *,
    backend: Backend,
    registry: str,
    only: Which,
    bento: str | None,
    model_version: str | None,
    git_sha: str | None,
    image: str | None,
    skaffold: bool,
    options: BuildOptions,
    extra_tags: list[str],
    push: bool,
) -> list[str]:
    """Build (tag, push) the chosen images; returns every reference built. The one image builder:
    ``tabula images`` and the release loop both build through it."""
    if skaffold:
        if "IMAGE" not in os.environ:
            raise ImageUsageError("--skaffold expects $IMAGE (set by skaffold's custom build)")
        image = os.environ["IMAGE"]
        push = push or os.environ.get("PUSH_IMAGE") == "true"
    if image is not None and only is Which.all:
        raise ImageUsageError("--image/--skaffold name one image: choose it with --only service|training")
    _check_backend(backend)

    bento_tag: str | None = None
    if only is not Which.training:
        bento_tag, bento_version = resolve_bento(bento)
        model_version = model_version or bento_version
    if image is not None:
        service_ref = training_ref = image
    else:
        if model_version is None:
            raise ImageUsageError(
                f"no model version: pass --model-version or a Bento with a {MODEL_VERSION_LABEL} label"
            )
        tag = image_tag(model_version, git_sha or current_git_sha())
        service_ref = image_ref(registry, SERVICE_IMAGE, tag)
        training_ref = image_ref(registry, TRAINING_IMAGE, tag)

    built: list[str] = []
    if bento_tag is not None:
        run(service_build_command(bento_tag, service_ref, options), cwd=CONTAINERIZE_CWD)
        built.append(service_ref)
    if only is not Which.service:
        run(training_build_command(training_ref, options))
        built.append(training_ref)
    for ref in list(built):
        for extra in extra_tags:
            built.append(f"{ref.rsplit(':', 1)[0]}:{extra}")
            run(tag_command(ref, built[-1], backend))
    if push:
        for ref in built:
            run(push_command(ref, backend))
    return built
