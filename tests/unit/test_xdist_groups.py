"""`./run test` relies on `--dist loadgroup`: a group's tests share one worker, so a session server or
podman's image store is made once, and never by two workers at a time. pytest 9.2 silently broke that
with pytest-xdist 3.8 (pytest-dev/pytest-xdist#1386: the group suffix xdist writes into `_nodeid` no
longer reaches the node id). This runs the locked pytest and xdist on two groups, marked per parameter as
the fault matrix marks its cases, and checks that each group's tests ran on one worker."""

from __future__ import annotations

import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

GROUPED = """
import os, pathlib, pytest

def record(name):
    pathlib.Path(os.environ["RECORD_DIR"], name).write_text(os.environ["PYTEST_XDIST_WORKER"])

@pytest.mark.parametrize("case", [
    pytest.param(f"{group}-{index}", marks=pytest.mark.xdist_group(group))
    for group in ("alpha", "beta") for index in range(4)
])
def test_grouped(case):
    record(case)
"""


def test_each_group_runs_on_one_worker(tmp_path: Path) -> None:
    (tmp_path / "test_grouped.py").write_text(GROUPED)
    record_dir = tmp_path / "ran"
    record_dir.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
         str(tmp_path / "test_grouped.py")],
        cwd=tmp_path, env={"RECORD_DIR": str(record_dir), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    workers: defaultdict[str, set[str]] = defaultdict(set)
    for ran in record_dir.iterdir():
        workers[ran.name.split("-")[0]].add(ran.read_text())
    assert sorted(workers) == ["alpha", "beta"]
    assert all(len(ran_on) == 1 for ran_on in workers.values()), dict(workers)
