"""The service's JSON log handler: lines written in batches, and the prediction line without a LogRecord."""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

from service.logs import JsonLines, configure_logger, log_info

FIELDS = {"prediction_id": "abc", "endpoint": "/predict", "latency_ms": 1.5, "rows": 1}


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def json_logger(
    flush_seconds: float = 60.0, stream: io.StringIO | None = None
) -> tuple[logging.Logger, JsonLines, io.StringIO]:
    logger = configure_logger("housing-price", "3", "json", "INFO")
    stream = io.StringIO() if stream is None else stream
    handler = JsonLines(stream, "housing-price", "3", flush_seconds=flush_seconds)
    configured = logger.handlers[0]
    logger.removeHandler(configured)
    configured.close()
    logger.addHandler(handler)
    return logger, handler, stream


def test_the_line_without_a_log_record_is_the_line_logging_writes() -> None:
    logger, handler, stream = json_logger()
    logger.info("prediction", extra=FIELDS)
    log_info(logger, "prediction", FIELDS)
    handler.close()
    through_logging, direct = lines(stream)
    assert through_logging.pop("ts") <= direct.pop("ts")
    assert direct == through_logging
    assert list(direct) == list(through_logging)  # same field order too
    assert direct["model_name"] == "housing-price"
    assert direct["model_version"] == "3"


def test_lines_wait_for_the_flusher_and_a_warning_takes_them_out_at_once() -> None:
    logger, handler, stream = json_logger()
    log_info(logger, "prediction", FIELDS)
    assert stream.getvalue() == ""  # held: no write per line
    logger.warning("shed", extra={"reason": "queue_timeout"})
    assert [line["message"] for line in lines(stream)] == ["prediction", "shed"]
    handler.close()


def test_the_flusher_writes_held_lines_within_its_interval() -> None:
    logger, handler, stream = json_logger(flush_seconds=0.05)
    log_info(logger, "prediction", FIELDS)
    deadline = time.monotonic() + 5.0
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [line["message"] for line in lines(stream)] == ["prediction"]
    handler.close()


def test_another_handler_on_the_logger_still_sees_the_line() -> None:
    logger, handler, stream = json_logger()
    seen: list[logging.LogRecord] = []
    extra = logging.Handler()
    extra.emit = seen.append  # type: ignore[method-assign]
    logger.addHandler(extra)
    try:
        log_info(logger, "prediction", FIELDS)
    finally:
        logger.removeHandler(extra)
    handler.close()
    assert [record.getMessage() for record in seen] == ["prediction"]
    assert [line["prediction_id"] for line in lines(stream)] == ["abc"]


def test_a_disabled_level_writes_nothing() -> None:
    logger, handler, stream = json_logger()
    logger.setLevel(logging.WARNING)
    log_info(logger, "prediction", FIELDS)
    handler.close()
    assert stream.getvalue() == ""


class BrokenOnce(io.StringIO):
    """A stream whose first write fails, as a closed pipe's would."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def write(self, text: str) -> int:
        if not self.failed:
            self.failed = True
            raise BrokenPipeError("reader gone")
        return super().write(text)


def test_a_failed_write_loses_those_lines_and_the_flusher_goes_on() -> None:
    stream = BrokenOnce()
    logger, handler, _ = json_logger(flush_seconds=0.02, stream=stream)
    log_info(logger, "lost", FIELDS)
    deadline = time.monotonic() + 5.0
    while not stream.failed and time.monotonic() < deadline:
        time.sleep(0.01)
    log_info(logger, "kept", FIELDS)
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    written_by_the_flusher = stream.getvalue()
    handler.close()
    assert [json.loads(line)["message"] for line in written_by_the_flusher.splitlines()] == ["kept"]
