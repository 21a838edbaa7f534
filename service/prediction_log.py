"""Prediction log: a JSON line per request, and optionally a database written in the background.

The database sink sits behind a bounded queue drained by one thread in batches, so a slow or
failing database never slows or fails a prediction: when the queue is full or a write fails,
records are dropped and counted instead.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from service.logs import log_info

if TYPE_CHECKING:
    from service.tasks import Answers

DB_SINK = "database"
TABLE_NAME = "prediction_log"


@dataclass(frozen=True)
class PredictionRecord:
    prediction_id: str
    timestamp: datetime
    model_name: str
    model_version: str
    endpoint: str
    row: int
    inputs: dict[str, float]
    # Regression: the value; classification: the label and the class probabilities.
    prediction: float | None = None
    label: str | None = None
    probabilities: dict[str, float] | None = None


class DatabaseSink:
    """Batches records into a SQLAlchemy table from a background thread."""

    def __init__(
        self,
        url: str,
        queue_size: int,
        batch_size: int,
        flush_seconds: float,
        on_dropped: Callable[[int], None],
        logger: logging.Logger,
    ) -> None:
        self._url = url
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._on_dropped = on_dropped
        self._logger = logger
        self._stop = threading.Event()
        self._table: Any = None
        self._engine: Any = None
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    def offer(self, record: PredictionRecord) -> None:
        """Queue a record without ever blocking; a full queue drops it."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._on_dropped(1)

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (within ``timeout``) and stop the writer."""
        self._stop.set()
        self._thread.join(timeout)
        if self._engine is not None:
            self._engine.dispose()

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            batch = self._next_batch()
            if batch:
                self._write(batch)

    def _next_batch(self) -> list[PredictionRecord]:
        batch: list[PredictionRecord] = []
        deadline = time.monotonic() + self._flush_seconds
        while len(batch) < self._batch_size:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self._stop.is_set() and self._queue.empty()):
                break
            try:
                batch.append(self._queue.get(timeout=min(remaining, 0.1)))
            except queue.Empty:
                continue
        return batch

    def _write(self, batch: list[PredictionRecord]) -> None:
        try:
            table = self._ensure_table()
            with self._engine.begin() as connection:
                connection.execute(table.insert(), [_row(record) for record in batch])
        except Exception:
            self._on_dropped(len(batch))
            self._logger.warning("prediction log write failed", extra={"dropped": len(batch)}, exc_info=True)

    def _ensure_table(self) -> Any:
        if self._table is None:
            import sqlalchemy as sa

            self._engine = self._engine or sa.create_engine(self._url, pool_pre_ping=True)
            metadata = sa.MetaData()
            table = sa.Table(
                TABLE_NAME,
                metadata,
                sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                sa.Column("prediction_id", sa.String(36), nullable=False, index=True),
                sa.Column("row", sa.Integer, nullable=False),
                sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
                sa.Column("model_name", sa.String(200), nullable=False),
                sa.Column("model_version", sa.String(50), nullable=False),
                sa.Column("endpoint", sa.String(50), nullable=False),
                sa.Column("prediction", sa.Float, nullable=True),
                sa.Column("label", sa.String(200), nullable=True),
                sa.Column("probabilities", sa.JSON, nullable=True),
                sa.Column("inputs", sa.JSON, nullable=False),
            )
            metadata.create_all(self._engine)
            self._table = table
        return self._table


def _row(record: PredictionRecord) -> dict[str, Any]:
    # Only the task's own columns: a table made before classification existed still takes regressions.
    return {key: value for key, value in asdict(record).items() if value is not None}


class PredictionLog:
    """Writes the per-request log line and hands rows to the optional database sink."""

    def __init__(
        self,
        logger: logging.Logger,
        model_name: str,
        model_version: str,
        feature_names: list[str],
        enabled: bool,
        sample_rate: float,
        sink: DatabaseSink | None,
    ) -> None:
        self._logger = logger
        self._model_name = model_name
        self._model_version = model_version
        self._feature_names = feature_names
        self._enabled = enabled
        self._sample_rate = sample_rate
        self._sink = sink

    def record(
        self,
        prediction_id: str,
        endpoint: str,
        timestamp: datetime,
        latency_ms: float,
        rows: list[list[float]],
        answers: Answers,
    ) -> None:
        if self._enabled:
            fields: dict[str, Any] = {
                "prediction_id": prediction_id,
                "endpoint": endpoint,
                "latency_ms": round(latency_ms, 3),
                "rows": len(rows),
            }
            if self._sample_rate > 0 and random.random() < self._sample_rate:  # noqa: S311 - sampling, not crypto
                fields["inputs"] = [self._named(row) for row in rows]
                fields.update(answers.logged())
            log_info(self._logger, "prediction", fields)
        if self._sink is not None:
            for index, (row, outputs) in enumerate(zip(rows, answers.rows(), strict=True)):
                self._sink.offer(
                    PredictionRecord(
                        prediction_id=prediction_id,
                        timestamp=timestamp,
                        model_name=self._model_name,
                        model_version=self._model_version,
                        endpoint=endpoint,
                        row=index,
                        inputs=self._named(row),
                        **outputs,
                    )
                )

    def close(self) -> None:
        for handler in self._logger.handlers:
            handler.flush()
        if self._sink is not None:
            self._sink.close()

    def _named(self, row: list[float]) -> dict[str, float]:
        return dict(zip(self._feature_names, row, strict=True))
