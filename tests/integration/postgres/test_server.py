"""The session's PostgreSQL server (tests/postgres.py) is a real one: it runs as `postgres`, not root,
listens on loopback only, and keeps what is written across a restart."""

from __future__ import annotations

import psutil
import pytest

from tests.postgres import SERVER_USER, Postgres

pytestmark = [pytest.mark.integration]


def test_a_real_server_on_loopback_as_the_postgres_user(postgres: Postgres) -> None:
    assert int(postgres.sql("SHOW server_version_num")) >= 150000
    assert postgres.sql("SHOW listen_addresses") == "127.0.0.1"
    pid = int((postgres.data_dir / "postmaster.pid").read_text().split()[0])
    assert psutil.Process(pid).username() == SERVER_USER


def test_what_is_written_survives_a_restart(postgres: Postgres) -> None:
    url = postgres.create_database("restart_check")
    assert url.endswith("/restart_check")
    postgres.sql("CREATE TABLE kept (value integer)", "restart_check")
    postgres.sql("INSERT INTO kept VALUES (42)", "restart_check")
    postgres.ctl("restart")
    assert postgres.sql("SELECT value FROM kept", "restart_check") == "42"
