"""The set-up (`./run setup`) provides every command and file the tests need (tests/tooling.py derives
them from the test code): each comes from a Debian package of SYSTEM_PACKAGES (its `dpkg -L` list, or
that of a package it depends on directly, for metapackages such as `postgresql`), from an Essential
package every Debian has, from the locked virtual environment, or from the set-up's own .tools/bin.
scripts/check-fresh-setup.sh proves the same on a freshly bootstrapped Debian root."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import pytest

from tests import tooling
from tests.support import REPO_ROOT, require_tool, unavailable

pytestmark = pytest.mark.unit

RUN = REPO_ROOT / "run"
BIN_DIRS = ("/usr/bin/", "/bin/", "/usr/sbin/", "/sbin/", "/usr/local/bin/")


def _bash_array(name: str) -> list[str]:
    match = re.search(rf"^{name}=\(([^)]*)\)$", RUN.read_text(), re.MULTILINE)
    assert match, f"{name}=(...) not found in ./run"
    return match.group(1).split()


def _dpkg(*args: str) -> str:
    result = subprocess.run(
        [require_tool("dpkg-query"), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"dpkg-query {' '.join(args)}: {result.stderr.strip()}"
    return result.stdout


@cache
def _files_of(package: str) -> frozenset[str]:
    return frozenset(_dpkg("-L", package).split("\n")) - {""}


def _installed(package: str) -> bool:
    status = subprocess.run(
        [require_tool("dpkg-query"), "-W", "-f=${db:Status-Status}", package],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return status.stdout == "installed"


def _packages_behind(package: str) -> list[str]:
    """The package, and for a metapackage (no program of its own) the installed packages it depends on."""
    if any(path.startswith(BIN_DIRS) for path in _files_of(package)):
        return [package]
    depends = _dpkg("-W", "-f=${Depends}", package)
    names = re.findall(r"(?:^|[,|])\s*([a-z0-9][a-z0-9+.-]*)", depends)
    return [package, *(name for name in names if _installed(name))]


def _installed_essential() -> list[str]:
    listing = _dpkg("-W", "-f=${Package} ${Essential} ${db:Status-Status}\n")
    return [line.split()[0] for line in listing.splitlines() if line.endswith(" yes installed")]


def _provided_files() -> dict[str, str]:
    """Installed path -> the package of SYSTEM_PACKAGES (or Essential package) it comes from."""
    provided: dict[str, str] = {}
    for package in _bash_array("SYSTEM_PACKAGES"):
        if not _installed(package):
            # ./run accepts the package's program from another package (Docker's runc on GitHub's runners).
            if program := shutil.which(package):
                provided[program] = f"{package} (program from another package)"
                continue
            # A set-up that did not run (or failed): the test cannot tell, so it does not pass.
            unavailable(f"{package} of SYSTEM_PACKAGES is not installed; run `./run setup` as root")
        for source in _packages_behind(package):
            provided.update(dict.fromkeys(_files_of(source), package))
    for package in _installed_essential():
        for path in _files_of(package):
            provided.setdefault(path, f"{package} (Essential)")
    return provided


def test_every_command_the_tests_run_is_provided_by_the_set_up() -> None:
    provided = _provided_files()
    setup_tools = set(_bash_array("SETUP_TOOLS"))
    unprovided = []
    for name, need in tooling.required_commands().items():
        if need.venv or (REPO_ROOT / ".venv" / "bin" / name).exists() or name in setup_tools:
            continue
        if not any(f"{folder}{name}" in provided for folder in BIN_DIRS):
            unprovided.append(f"{name} ({need.why})")
    assert unprovided == []


def test_every_file_the_tests_read_is_provided_by_the_set_up() -> None:
    provided = _provided_files()
    files = tooling.required_files()
    postgres_root = str(tooling.postgres.DEBIAN_POSTGRES_ROOT)
    postgres_programs = [path for path in files if path.startswith(postgres_root)]
    assert postgres_programs
    assert all(path in provided for path in postgres_programs), postgres_programs
    # Not a package's file: the set-up writes it (./run -> scripts/configure-podman.sh).
    assert str(tooling.CONTAINERS_CONF) in files
    assert "bash scripts/configure-podman.sh" in RUN.read_text()


def test_the_derivation_finds_what_the_tests_call(tmp_path: Path) -> None:
    # One instance of each way a test names a program; `tests.tooling` must find all of them.
    source = tmp_path / "sample.py"
    source.write_text(
        "import shutil, subprocess\n"
        "from tests.support import VENV_BIN, require_tool\n"
        "require_tool('alpha')\n"
        "shutil.which('beta')\n"
        "subprocess.run(['gamma', '-x'], check=True)\n"
        "for tool in ('delta', 'epsilon'):\n"
        "    require_tool(tool)\n"
        "str(VENV_BIN / 'zeta')\n"
        "subprocess.run([VARIABLE, 'not-a-program'])\n"
    )
    needs = list(tooling._needs_in(tooling.ast.parse(source.read_text()), "sample.py"))
    assert {need.name for need in needs} == {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}
    assert [need.name for need in needs if need.venv] == ["zeta"]


def test_the_tests_need_what_the_fresh_machine_lacked() -> None:
    # The failure of a fresh machine: podman kube play without catatonit; and PostgreSQL for the sinks.
    needs = tooling.required_commands()
    expected = {"podman", "catatonit", "openssl", "git", "kubectl", "helm", "prometheus", "runuser", "jq"}
    assert expected <= needs.keys()
    assert {"catatonit", "postgresql"} <= set(_bash_array("SYSTEM_PACKAGES"))


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_tool_fails_under_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setenv("CI", ci)
    missing = "no-such-tool-here"  # a name, not a literal: tests.tooling lists literal tool names as needed
    with pytest.raises(outcome, match=missing):
        require_tool(missing)
