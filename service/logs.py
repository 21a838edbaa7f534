"""The service's one logger: JSON lines on stdout, each carrying the served model's name and version."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "tabula.service"
# Attributes every LogRecord has; anything else was passed through ``extra=`` and is logged as a field.
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRIBUTES})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


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
    for old_filter in list(logger.filters):
        logger.removeFilter(old_filter)
    handler = logging.StreamHandler(sys.stdout)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
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
