"""`tabula images`: tags, the exact build commands per backend, CA-bundle handling, the
Containerfile's build context, and the CLI's one-line errors. The real builds are in
tests/e2e/test_images.py."""

import hashlib
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.images import register
from release.images import (
    CONTAINERFILE,
    IGNOREFILE,
    Backend,
    BuildOptions,
    ImageError,
    current_git_sha,
    image_ref,
    image_tag,
    service_build_command,
    training_build_command,
)
from tests.support import require_tool

pytestmark = pytest.mark.unit


def _options(backend: Backend, ca_bundle: Path | None = None, network: str | None = None) -> BuildOptions:
    return BuildOptions(backend=backend, base_image="localhost/base:1", ca_bundle=ca_bundle, network=network)


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    app.callback()(lambda: None)
    return app


def test_tag_is_model_version_then_git_sha() -> None:
    assert image_tag("7", "0123456789ab") == "7-0123456789ab"
    assert image_ref("localhost/", "tabula-training", "7-abc") == "localhost/tabula-training:7-abc"


@pytest.mark.parametrize("version", ["", "1-rc"])
def test_a_model_version_the_chart_cannot_read_back_is_rejected(version: str) -> None:
    with pytest.raises(ImageError):
        image_tag(version, "abc")


@pytest.mark.parametrize("backend", [Backend.podman, Backend.buildah])
def test_training_build_with_podman_or_buildah(backend: Backend, tmp_path: Path) -> None:
    command = training_build_command(
        "localhost/tabula-training:1-abc", _options(backend, network="host"), tmp_path
    )
    assert command[:2] == [backend.value, "build"]
    assert command[-1] == str(tmp_path)
    pairs = dict(zip(command[2:-1:2], command[3:-1:2], strict=True))
    assert pairs == {
        "--file": str(CONTAINERFILE),
        "--tag": "localhost/tabula-training:1-abc",
        "--build-arg": "BASE_IMAGE=localhost/base:1",
        "--ignorefile": str(IGNOREFILE),
        "--network": "host",
    }


def test_training_build_with_docker_relies_on_the_dockerignore_beside_the_containerfile() -> None:
    command = training_build_command("r:1-a", _options(Backend.docker))
    assert command[:2] == ["docker", "build"]
    assert "--ignorefile" not in command
    assert IGNOREFILE.name == f"{CONTAINERFILE.name}.dockerignore"
    assert IGNOREFILE.parent == CONTAINERFILE.parent


def test_ca_bundle_is_a_build_secret_keyed_by_its_digest(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    command = training_build_command("r:1-a", _options(Backend.podman, ca_bundle=bundle))
    assert command[command.index("--secret") + 1] == f"id=extra_ca,src={bundle}"
    digest = hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert f"EXTRA_CA_SHA256={digest}" in command
    # The Containerfile mounts that secret id and checks that digest in both stages.
    text = CONTAINERFILE.read_text()
    assert text.count("--mount=type=secret,id=extra_ca") == 2
    assert text.count("sha256sum --check") == 2


def test_service_image_is_containerized_from_the_bento(tmp_path: Path) -> None:
    command = service_build_command("tabula:abc", "localhost/tabula-service:1-a", _options(Backend.podman))
    assert command[1:] == [
        "-m",
        "bentoml",
        "containerize",
        "tabula:abc",
        "--backend",
        "podman",
        "--image-tag",
        "localhost/tabula-service:1-a",
    ]
    bundle = tmp_path / "ca.pem"
    bundle.write_text("pem")
    command = service_build_command("tabula:abc", "x:1-a", _options(Backend.buildah, bundle, "host"))
    assert command[-4:] == [
        "--opt",
        "network=host",
        "--opt",
        f"volume={bundle}:/etc/ssl/certs/ca-certificates.crt:ro",
    ]
    with pytest.raises(ImageError, match="docker"):
        service_build_command("tabula:abc", "x:1-a", _options(Backend.docker, bundle))


def test_training_image_copies_and_compiles_every_package_of_the_project() -> None:
    """A package missing from the Containerfile would be missing from the image, or compiled at every
    start (the image's bytecode is precompiled; its read-only root keeps nothing compiled later)."""
    pyproject = tomllib.loads((CONTAINERFILE.parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    packages = set(pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"])
    text = CONTAINERFILE.read_text()
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", text, flags=re.MULTILINE))
    compiled = set(re.findall(r'"\$site/(\w+)"', text))
    assert copied == compiled == packages


def test_build_context_holds_everything_the_containerfile_copies() -> None:
    """Each COPY source from the context is re-included by the whitelist ignore file."""
    sources = [
        source.rstrip("/")
        for line in CONTAINERFILE.read_text().splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    ]
    assert sources
    rules = [line for line in IGNOREFILE.read_text().splitlines() if line and not line.startswith("#")]
    assert rules[0] == "*"
    included = {rule.removeprefix("!").rstrip("/") for rule in rules if rule.startswith("!")}
    assert set(sources) <= included
    for source in sources:
        assert (CONTAINERFILE.parents[1] / source).exists(), source


def test_containerfile_runs_tabula_train_as_a_non_root_user() -> None:
    text = CONTAINERFILE.read_text()
    assert re.search(r"^USER \$\{USER_ID\}:0$", text, re.MULTILINE)
    assert 'ENTRYPOINT ["tabula"]' in text
    assert 'CMD ["train"]' in text
    assert "ARG BASE_IMAGE=python:3.11-slim" in text
    assert "uv sync --frozen --no-dev" in text


def test_git_sha_of_a_checkout_and_a_clear_error_outside_one(tmp_path: Path) -> None:
    git = require_tool("git")
    with pytest.raises(ImageError, match="--git-sha"):
        current_git_sha(tmp_path)
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([git, "init", "-q", str(tmp_path)], check=True)
    subprocess.run(
        [git, "-C", str(tmp_path), *identity, "commit", "-q", "--allow-empty", "-m", "x"], check=True
    )
    head = subprocess.run(
        [git, "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout
    assert current_git_sha(tmp_path) == head[:12]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "x:1"], "choose it with --only"),
        (["--only", "training", "--backend", "podman", "--git-sha", "a"], "no model version"),
        (
            ["--only", "training", "--model-version", "1-2", "--git-sha", "a", "--backend", "podman"],
            "contain no '-'",
        ),
    ],
)
def test_cli_mistakes_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(_cli(), ["images", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert message in lines[0]


def test_cli_reports_a_missing_backend(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        _cli(),
        ["images", "--only", "training", "--image", "x:1", "--backend", "buildah"],
        env={"PATH": str(tmp_path)},
    )
    assert result.exit_code == 6
    assert "build backend 'buildah' is not on PATH" in result.output
