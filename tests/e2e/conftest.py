"""Images shared by the e2e modules, built once per session: the local Debian base images and the
training image. Every e2e test runs on one xdist worker (group `e2e-images`, tests/conftest.py): they
share podman's image store, tags and pod names."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from tests.support import REPO_ROOT, VENV_BIN, require_tool, unavailable

UV_BASE_IMAGE = "localhost/debian-python-uv:bookworm"
TEST_CA_NAME = "tabula-e2e-test-ca"
# The git-sha part of every image tag and pod name this session makes: test runs side by side on one
# machine (a developer's and CI's) share podman's store, and must not overwrite each other's images.
SESSION_TAG = f"e2e{secrets.token_hex(4)}"


@dataclass(frozen=True)
class BuiltImage:
    ref: str
    ca_pem: str
    build_seconds: float


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)


def _untagged_images() -> set[str]:
    listed = podman("images", "--quiet", "--no-trunc", "--filter", "dangling=true")
    assert listed.returncode == 0, listed.stderr
    return set(listed.stdout.split())


@contextmanager
def removing_build_leftovers() -> Iterator[None]:
    """Removes, at the end, the untagged images that appeared meanwhile: the builds' earlier stages.

    A multi-stage build keeps each stage as an untagged image (its layer cache). Every session trusts a
    CA of its own, whose digest is a build argument, so none was ever reused: each session left 1.1 GB
    of builder stages, and 70 runs filled this machine's disk. Images in use by another build are kept
    (``podman rmi`` without ``--force`` refuses them).
    """
    before = _untagged_images()
    try:
        yield
    finally:
        for image in _untagged_images() - before:
            podman("rmi", image)


@pytest.fixture(scope="session")
def container_tools() -> None:
    for tool in ("podman", "buildah", "debootstrap", "openssl"):
        require_tool(tool)
    if os.geteuid() != 0:
        unavailable("the image builds need rootful podman (run as root, see ENVIRONMENT.md)")


@pytest.fixture(scope="session")
def base_images(container_tools: None) -> str:
    """Both local base images; the script keeps images that already exist."""
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "build-base-image.sh")],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return UV_BASE_IMAGE


@pytest.fixture(scope="session")
def training_image(base_images: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltImage]:
    scratch = tmp_path_factory.mktemp("ca")
    key, cert = scratch / "ca.key", scratch / "ca.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={TEST_CA_NAME}", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    ref = f"localhost/tabula-training:0-{SESSION_TAG}"
    with removing_build_leftovers():
        started = time.monotonic()
        result = subprocess.run(
            [str(VENV_BIN / "tabula"), "images", "--only", "training", "--backend", "podman",
             "--registry", "localhost", "--model-version", "0", "--git-sha", SESSION_TAG,
             "--base-image", base_images, "--network", "host", "--ca-bundle", str(cert)],
            capture_output=True, text=True, timeout=1800, check=False,
        )  # fmt: skip
        try:
            assert result.returncode == 0, result.stderr[-3000:]
            assert result.stdout.strip().splitlines()[-1] == ref
            yield BuiltImage(ref=ref, ca_pem=cert.read_text(), build_seconds=time.monotonic() - started)
        finally:
            podman("rmi", ref)
