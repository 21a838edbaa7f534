"""What the tests need from the machine, derived from the test code itself, and whether it is here.

The commands are read from the source of tests/ and load/ (ast): every ``require_tool("x")``,
``shutil.which("x")``, ``VENV_BIN / "x"``, every ``for tool in ("x", ...): require_tool(tool)`` and
every subprocess command written as a list that starts with a literal program name. What no call
names is listed in :data:`INDIRECT` with the reason. ``tests/unit/test_setup.py`` checks that the
set-up (``./run``) provides each of them; ``scripts/check-fresh-setup.sh`` runs this module in a
freshly bootstrapped Debian root after ``./run setup``:

    python -m tests.tooling     # one line per need, exit 1 when something is missing
"""

from __future__ import annotations

import ast
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests import postgres
from tests.support import REPO_ROOT, VENV_BIN

SCANNED = ("tests", "load")
TOOL_LOOKUPS = {"require_tool", "_tool", "which"}
SUBPROCESS_CALLS = {"run", "Popen", "check_output", "check_call", "call"}
# Needed by programs the tests run rather than by the tests' own calls.
INDIRECT = {
    "catatonit": "podman kube play's pause binary (tests/e2e/test_service_image.py)",
    "runc": "podman's runtime in scripts/configure-podman.sh",
    "unzip": "scripts/install-helm.sh, run by tests/chart/helm.py",
    "tar": "scripts/install-helm.sh and scripts/build-base-image.sh",
}
# Files that must exist beyond commands: podman's engine settings and the PostgreSQL server programs.
CONTAINERS_CONF = Path("/etc/containers/containers.conf")


@dataclass(frozen=True)
class Need:
    name: str
    why: str
    venv: bool = False


def _literal(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _called_name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _needs_in(tree: ast.AST, where: str) -> Iterator[Need]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _called_name(node)
            first = node.args[0] if node.args else None
            if name in TOOL_LOOKUPS and first is not None and (tool := _literal(first)):
                yield Need(tool, where)
            listed = first.elts if isinstance(first, ast.List) else []
            if name in SUBPROCESS_CALLS and listed and (program := _literal(listed[0])):
                yield Need(program, where)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.left, ast.Name):
            if node.left.id == "VENV_BIN" and (tool := _literal(node.right)):
                yield Need(tool, where, venv=True)
        elif isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple | ast.List) and _looks_up(node):
            tools = [_literal(element) for element in node.iter.elts]
            yield from (Need(tool, where) for tool in tools if tool)


def _looks_up(loop: ast.For) -> bool:
    """Whether the loop's body passes its variable to require_tool/which."""
    if not isinstance(loop.target, ast.Name):
        return False
    variable = loop.target.id
    return any(
        isinstance(inner, ast.Call)
        and _called_name(inner) in TOOL_LOOKUPS
        and any(isinstance(arg, ast.Name) and arg.id == variable for arg in inner.args)
        for inner in ast.walk(loop)
    )


def required_commands() -> dict[str, Need]:
    """Program name -> the first place that needs it (venv programs flagged)."""
    found: dict[str, Need] = {}
    for folder in SCANNED:
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            where = str(path.relative_to(REPO_ROOT))
            for need in _needs_in(ast.parse(path.read_text(encoding="utf-8")), where):
                found.setdefault(need.name, need)
    for name, why in INDIRECT.items():
        found.setdefault(name, Need(name, why))
    return found


def required_files() -> dict[str, str]:
    """Path -> why; the PostgreSQL programs under the newest installed major version."""
    files = {str(CONTAINERS_CONF): "podman on this kind of VM (scripts/configure-podman.sh)"}
    bin_dir = postgres.server_bin_dir() or postgres.DEBIAN_POSTGRES_ROOT / "<major>" / "bin"
    for program in postgres.SERVER_PROGRAMS:
        files[str(bin_dir / program)] = "tests/postgres.py (Debian's postgresql)"
    return files


def locate(need: Need) -> str | None:
    """Where the tests would find the command: the venv for venv programs, else PATH, .tools/bin or the venv
    (``uv run`` puts the venv on PATH)."""
    if need.venv:
        return shutil.which(need.name, path=str(VENV_BIN))
    beside = f"{REPO_ROOT / '.tools' / 'bin'}:{VENV_BIN}"
    return shutil.which(need.name) or shutil.which(need.name, path=beside)


def main() -> int:
    missing = 0
    for name, need in sorted(required_commands().items()):
        path = locate(need)
        missing += path is None
        print(f"{'ok     ' if path else 'MISSING'} command {name:18} {path or '-':48} {need.why}")
    for path_name, why in required_files().items():
        present = Path(path_name).is_file()
        missing += not present
        print(f"{'ok     ' if present else 'MISSING'} file    {path_name:67} {why}")
    print(f"{missing} missing")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
