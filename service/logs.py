"""The service's one logger: JSON lines on stdout, each carrying the served model's name and version."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

LOGGER_NAME = "tabula.service"
# Longest a line waits in the JSON handler before it is written out.
FLUSH_SECONDS = 0.1
# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged as a field.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


def json_line(created: float, level: str, name: str, message: str, fields: Mapping[str, Any]) -> str:
    """One log line: time, level, logger and message, then the fields."""
    line: dict[str, Any] = {
        "ts": datetime.fromtimestamp(created, UTC).isoformat(),
        "level": level,
        "logger": name,
        "message": message,
    }
    line.update(fields)
    return json.dumps(line, default=str)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(record.created, record.levelname, record.name, record.getMessage(), fields)


class JsonLines(logging.StreamHandler[TextIO]):
    """The service's JSON lines, written to the stream in batches.

    A flush per line, one system call each, cost single-row predictions 4 % of their throughput
    (README, "Benchmark"). So lines wait at most ``flush_seconds`` (a daemon thread writes them out);
    a warning or worse goes out at once with everything before it; ``close``, which logging calls at
    exit, writes the rest. :meth:`info` is the prediction path's line without a LogRecord.
    """

    def __init__(
        self, stream: TextIO, model_name: str, model_version: str, flush_seconds: float = FLUSH_SECONDS
    ) -> None:
        super().__init__(stream)
        self.setFormatter(JsonFormatter())
        self._model_fields = {"model_name": model_name, "model_version": model_version}
        self._flush_seconds = flush_seconds
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()
        self._write_lock = threading.Lock()  # keeps batches in order: held while writing, unlike the other
        self._stopped = threading.Event()
        self._flusher: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's own contract: report it, never raise
            self.handleError(record)
            return
        self._add(line)
        if record.levelno >= logging.WARNING:
            self.flush()

    def info(self, logger_name: str, message: str, fields: Mapping[str, Any]) -> None:
        """The line ``logger.info(message, extra=fields)`` writes, without making a LogRecord (about 8 % of
        single-row throughput, measured in the README)."""
        self._add(json_line(time.time(), "INFO", logger_name, message, {**fields, **self._model_fields}))

    def flush(self) -> None:
        with self._write_lock:
            with self._pending_lock:
                lines, self._pending = self._pending, []
            if lines and self.stream is not None:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()

    def close(self) -> None:
        self._stopped.set()
        self.flush()
        super().close()

    def _add(self, line: str) -> None:
        with self._pending_lock:
            self._pending.append(line)
            if self._flusher is None:
                # Started with the first line, in the process that logs (BentoML forks its workers).
                self._flusher = threading.Thread(target=self._flush_often, name="log-flush", daemon=True)
                self._flusher.start()

    def _flush_often(self) -> None:
        while not self._stopped.wait(self._flush_seconds):
            try:
                self.flush()
            except (OSError, ValueError):  # a broken or closed stream: its lines are lost, not later ones
                continue


class _ModelFields(logging.Filter):
    """Stamps model name and version on every record of the service logger."""

    def __init__(self, model_name: str, model_version: str) -> None:
        super().__init__()
        self.model_name = model_name
        self.model_version = model_version

    def filter(self, record: logging.LogRecord) -> bool:
        record.model_name = self.model_name
        record.model_version = self.model_version
        return True


def configure_logger(model_name: str, model_version: str, log_format: str, level: str) -> logging.Logger:
    """Set up (idempotently) the service logger; it does not propagate so BentoML's handlers stay out."""
    logger = logging.getLogger(LOGGER_NAME)
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()
    for old_filter in list(logger.filters):
        logger.removeFilter(old_filter)
    handler: logging.Handler
    if log_format == "json":
        handler = JsonLines(sys.stdout, model_name, model_version)
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(
            logging.Formatter(
                "%(asctime)s %(levelname)s %(name)s [%(model_name)s:%(model_version)s] %(message)s"
            )
        )
    logger.addHandler(handler)
    logger.addFilter(_ModelFields(model_name, model_version))
    logger.setLevel(level.upper())
    logger.propagate = False
    return logger


def log_info(logger: logging.Logger, message: str, fields: Mapping[str, Any]) -> None:
    """``logger.info(message, extra=fields)``, straight into the JSON handler when it is the only one."""
    handlers = logger.handlers
    if len(handlers) == 1 and type(handlers[0]) is JsonLines and logger.isEnabledFor(logging.INFO):
        handlers[0].info(logger.name, message, fields)
    else:
        logger.info(message, extra=fields)
