"""The database sink loses nothing under normal load and never blocks when the database is down."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from service.logs import JsonFormatter, configure_logger
from service.prediction_log import TABLE_NAME, DatabaseSink, PredictionLog, PredictionRecord
from service.tasks import Classification, Regression

pytestmark = pytest.mark.unit

FEATURES = ["MedInc", "HouseAge"]


def record(i: int) -> PredictionRecord:
    return PredictionRecord(
        prediction_id=f"id-{i}",
        timestamp=datetime.now(UTC),
        model_name="tabula",
        model_version="3",
        endpoint="/predict",
        row=0,
        prediction=float(i),
        inputs={"MedInc": 1.0, "HouseAge": 2.0},
    )


class Dropped:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, n: int) -> None:
        self.count += n


def test_no_record_is_lost_under_normal_load(tmp_path: Path) -> None:
    database = tmp_path / "log.db"
    dropped = Dropped()
    sink = DatabaseSink(f"sqlite:///{database}", 10_000, 200, 0.1, dropped, logging.getLogger("test"))
    for i in range(3000):
        sink.offer(record(i))
        if i % 500 == 0:
            time.sleep(0.01)  # requests arrive over time, not all at once
    sink.close(timeout=30)
    with sqlite3.connect(database) as db:
        ids = {row[0] for row in db.execute(f"SELECT prediction_id FROM {TABLE_NAME}")}  # noqa: S608
    assert ids == {f"id-{i}" for i in range(3000)}
    assert dropped.count == 0


def test_database_down_never_blocks_and_drops_are_counted(tmp_path: Path) -> None:
    dropped = Dropped()
    unreachable = f"sqlite:///{tmp_path / 'missing-dir' / 'log.db'}"
    sink = DatabaseSink(unreachable, 100, 50, 0.05, dropped, logging.getLogger("test"))
    started = time.perf_counter()
    for i in range(5000):
        sink.offer(record(i))
    offering = time.perf_counter() - started
    sink.close(timeout=10)
    assert offering < 1.0  # 5000 offers: a few milliseconds unless something blocks
    assert dropped.count == 5000  # every record is either refused by the full queue or lost in a failed write


def test_prediction_log_writes_one_json_line_per_request(tmp_path: Path) -> None:
    logger = configure_logger("tabula", "7", "json", "INFO")
    stream = io.StringIO()
    logger.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    database = tmp_path / "log.db"
    dropped = Dropped()
    sink = DatabaseSink(f"sqlite:///{database}", 100, 10, 0.05, dropped, logger)
    log = PredictionLog(logger, "tabula", "7", FEATURES, enabled=True, sample_rate=1.0, sink=sink)
    answers = Regression().answers(np.array([0.5, 0.7]))
    log.record("abc", "/predict/batch", datetime.now(UTC), 1.23456, [[1.0, 2.0], [3.0, 4.0]], answers)
    log.close()
    line = json.loads(stream.getvalue().strip())
    assert line["message"] == "prediction"
    assert (line["model_name"], line["model_version"]) == ("tabula", "7")
    assert (line["prediction_id"], line["rows"], line["latency_ms"]) == ("abc", 2, 1.235)
    assert line["inputs"] == [{"MedInc": 1.0, "HouseAge": 2.0}, {"MedInc": 3.0, "HouseAge": 4.0}]
    assert line["outputs"] == [0.5, 0.7]
    with sqlite3.connect(database) as db:
        rows = list(db.execute(f"SELECT prediction_id, row, prediction FROM {TABLE_NAME} ORDER BY row"))  # noqa: S608
    assert rows == [("abc", 0, 0.5), ("abc", 1, 0.7)]


def test_a_classifier_logs_labels_and_probabilities(tmp_path: Path) -> None:
    logger = configure_logger("iris", "2", "json", "INFO")
    stream = io.StringIO()
    logger.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    database = tmp_path / "log.db"
    sink = DatabaseSink(f"sqlite:///{database}", 100, 10, 0.05, Dropped(), logger)
    log = PredictionLog(logger, "iris", "2", FEATURES, enabled=True, sample_rate=1.0, sink=sink)
    answers = Classification(("a", "b")).answers(np.array([[0.25, 0.75], [0.875, 0.125]]))
    log.record("xyz", "/predict/batch", datetime.now(UTC), 1.0, [[1.0, 2.0], [3.0, 4.0]], answers)
    log.close()
    line = json.loads(stream.getvalue().strip())
    assert line["outputs"] == ["b", "a"]
    assert line["probabilities"] == [{"a": 0.25, "b": 0.75}, {"a": 0.875, "b": 0.125}]
    with sqlite3.connect(database) as db:
        query = f"SELECT row, prediction, label, probabilities FROM {TABLE_NAME} ORDER BY row"  # noqa: S608
        rows = [(row, value, label, json.loads(p)) for row, value, label, p in db.execute(query)]
    assert rows == [(0, None, "b", {"a": 0.25, "b": 0.75}), (1, None, "a", {"a": 0.875, "b": 0.125})]


def test_inputs_are_left_out_when_not_sampled() -> None:
    logger = configure_logger("tabula", "7", "json", "INFO")
    stream = io.StringIO()
    logger.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    log = PredictionLog(logger, "tabula", "7", FEATURES, enabled=True, sample_rate=0.0, sink=None)
    log.record("abc", "/predict", datetime.now(UTC), 1.0, [[1.0, 2.0]], Regression().answers(np.array([0.5])))
    log.close()
    line = json.loads(stream.getvalue())
    assert "inputs" not in line
    assert "outputs" not in line


def test_json_formatter_includes_exceptions() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed"
    assert "ValueError: boom" in line["exception"]
