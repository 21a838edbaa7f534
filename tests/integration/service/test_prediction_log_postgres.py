"""The prediction-log database sink (service/prediction_log.py) of a real `bentoml serve` writing to
the session's real PostgreSQL server, as the chart suggests for production. With the database down or
slow, predictions answer as before (the sink sits behind a bounded queue drained by its own thread)
and every record not written is counted in `tabula_prediction_log_dropped_total{sink="database"}`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.postgres import Postgres
from tests.support import Server, server_home, service_env, start_server, stop_server, wait_ready

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DATABASE = "predictions"
QUEUE_SIZE = 40
BATCH_SIZE = 10
# Every statement on the table waits this long once the database is made slow.
SLOW_WRITE_SECONDS = 2.0
ROW = {
    "MedInc": 3.5, "HouseAge": 25.0, "AveRooms": 5.2, "AveBedrms": 1.05,
    "Population": 1200.0, "AveOccup": 2.9, "Latitude": 34.05, "Longitude": -118.25,
}  # fmt: skip


@pytest.fixture(scope="module")
def logged(
    bento_tag: str, bentoml_home: object, postgres: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    database_url = postgres.create_database(DATABASE)
    log_path = tmp_path_factory.mktemp("logs") / "served-postgres.log"
    env = service_env(
        server_home(bentoml_home, log_path),  # type: ignore[arg-type]
        drift_update_seconds="0",
        prediction_log_db_url=database_url,
        prediction_log_flush_seconds="0.2",
        prediction_log_queue_size=str(QUEUE_SIZE),
        prediction_log_batch_size=str(BATCH_SIZE),
    )
    server = start_server([bento_tag], env, log_path)
    try:
        wait_ready(server)
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def client(logged: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=logged.base_url, timeout=30) as http:
        yield http


def dropped(client: httpx.Client) -> float:
    families = text_string_to_metric_families(client.get("/metrics").text)
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == "tabula_prediction_log_dropped_total" and sample.labels.get("sink") == "database"
    )


def stored(postgres: Postgres, prediction_ids: list[str]) -> int:
    exists = postgres.sql("SELECT to_regclass('prediction_log') IS NOT NULL", DATABASE)
    if exists != "True":
        return 0
    return int(
        postgres.sql(
            "SELECT count(DISTINCT prediction_id) FROM prediction_log WHERE prediction_id = ANY(%s)",
            DATABASE,
            (prediction_ids,),
        )
    )


def wait_until(condition: object, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def predict(client: httpx.Client) -> tuple[str, float, float]:
    """(prediction_id, prediction, seconds) of one /predict call, which must succeed."""
    started = time.perf_counter()
    response = client.post("/predict", json=ROW)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200, response.text
    body = response.json()
    return body["prediction_id"], body["prediction"], elapsed


def test_rows_of_single_and_batch_predictions_land_in_postgres(
    client: httpx.Client, postgres: Postgres, logged: Server
) -> None:
    single = [predict(client) for _ in range(5)]
    batch = client.post("/predict/batch", json={"rows": [ROW, ROW, ROW]})
    assert batch.status_code == 200, batch.text
    ids = [prediction_id for prediction_id, _, _ in single]
    assert wait_until(lambda: stored(postgres, ids) == len(ids)), logged.log()[-3000:]
    first_id, first_value, _ = single[0]
    prediction, income, version = postgres.sql(
        "SELECT concat_ws('|', prediction, inputs->>'MedInc', model_version) FROM prediction_log "
        "WHERE prediction_id = %s",
        DATABASE,
        (first_id,),
    ).split("|")
    assert float(prediction) == pytest.approx(first_value, rel=1e-12)
    assert float(income) == ROW["MedInc"]
    assert version == batch.json()["model_version"]
    # The batch is one prediction id with one record per row, in request order.
    assert wait_until(
        lambda: (
            postgres.sql(
                'SELECT string_agg("row"::text, \',\' ORDER BY "row") FROM prediction_log '
                "GROUP BY prediction_id HAVING count(*) = 3",
                DATABASE,
            )
            == "0,1,2"
        )
    )


def test_database_down_drops_and_counts_and_predictions_are_unaffected(
    client: httpx.Client, postgres: Postgres
) -> None:
    before = dropped(client)
    postgres.ctl("stop", "-m", "fast")
    try:
        answered = [predict(client) for _ in range(20)]
        assert len({prediction_id for prediction_id, _, _ in answered}) == 20
        # Each failed write drops its batch and counts it.
        assert wait_until(lambda: dropped(client) >= before + 20, timeout=30), dropped(client) - before
    finally:
        postgres.ctl("start")
    # Once the database is back the sink writes again (the engine re-connects).
    ids = [predict(client)[0] for _ in range(3)]
    assert wait_until(lambda: stored(postgres, ids) == 3, timeout=30)


def test_slow_database_leaves_prediction_latency_alone_and_counts_drops(
    client: httpx.Client, postgres: Postgres
) -> None:
    answered = [predict(client) for _ in range(20)]
    baseline = [seconds for _, _, seconds in answered]
    # The sink creates its table with its first write: this test must not rely on an earlier one.
    assert wait_until(lambda: stored(postgres, [prediction_id for prediction_id, _, _ in answered]) == 20)
    # Every INSERT into the log now takes SLOW_WRITE_SECONDS (a statement trigger that sleeps).
    postgres.sql(
        "CREATE OR REPLACE FUNCTION slow_log() RETURNS trigger LANGUAGE plpgsql AS "
        f"$$ BEGIN PERFORM pg_sleep({SLOW_WRITE_SECONDS}); RETURN NULL; END $$",
        DATABASE,
    )
    postgres.sql(
        "CREATE TRIGGER slow_log BEFORE INSERT ON prediction_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION slow_log()",
        DATABASE,
    )
    try:
        before = dropped(client)
        started = time.monotonic()
        # Far more records than the queue holds while one batch write takes seconds.
        slow = [predict(client)[2] for _ in range(4 * QUEUE_SIZE)]
        elapsed = time.monotonic() - started
        assert wait_until(lambda: dropped(client) > before, timeout=10)
    finally:
        postgres.sql("DROP TRIGGER slow_log ON prediction_log", DATABASE)
    # The writer was blocked in the database for most of the run; the predictions were not.
    assert elapsed < 4 * QUEUE_SIZE * SLOW_WRITE_SECONDS / BATCH_SIZE
    assert statistics.median(slow) < max(0.05, 3 * statistics.median(baseline))
    assert max(slow) < SLOW_WRITE_SECONDS / 2
    assert dropped(client) - before >= 4 * QUEUE_SIZE - QUEUE_SIZE - 2 * BATCH_SIZE
