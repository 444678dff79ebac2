"""JsonFormatter: one JSON object per line with the event and the run context."""

import io
import json
import logging
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from durableflow.observability import JsonFormatter, run_scope, step_scope

RUN_ID = uuid.UUID("01900000-0000-7000-8000-0000000000aa")


def logger_writing_json() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(f"test.json.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger, stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_record_inside_a_step_carries_event_and_context() -> None:
    logger, stream = logger_writing_json()
    with run_scope(RUN_ID, "ingest", 2, "req-9"), step_scope("fetch", 4, attempt=2):
        logger.info("fetched %d pages", 3, extra={"event": "pages_fetched"})
    (line,) = lines(stream)
    assert list(line) == [
        "time",
        "level",
        "logger",
        "message",
        "event",
        "run_id",
        "workflow",
        "workflow_version",
        "step",
        "step_id",
        "attempt",
        "correlation_id",
    ]
    assert line["level"] == "INFO"
    assert line["logger"] == logger.name
    assert line["message"] == "fetched 3 pages"
    assert line["event"] == "pages_fetched"
    assert (line["run_id"], line["workflow"], line["workflow_version"]) == (
        str(RUN_ID),
        "ingest",
        2,
    )
    assert (line["step"], line["step_id"], line["attempt"]) == ("fetch", 4, 2)
    assert line["correlation_id"] == "req-9"
    stamp = datetime.fromisoformat(str(line["time"]))
    assert stamp.utcoffset() == timedelta(0)


def test_outside_a_run_the_context_keys_are_null() -> None:
    logger, stream = logger_writing_json()
    logger.warning("plain")
    (line,) = lines(stream)
    assert line["event"] is None
    assert line["run_id"] is None and line["step"] is None and line["correlation_id"] is None


def test_other_extra_values_are_kept_and_made_json_safe() -> None:
    logger, stream = logger_writing_json()
    logger.info(
        "with extras",
        extra={"event": "x", "run_uuid": RUN_ID, "amount": Decimal("1.50"), "count": 2},
    )
    (line,) = lines(stream)
    assert line["run_uuid"] == str(RUN_ID)
    assert line["amount"] == "1.50"
    assert line["count"] == 2


def test_an_extra_key_never_overwrites_a_standard_one() -> None:
    logger, stream = logger_writing_json()
    logger.info("collide", extra={"time": "yesterday", "level": "LOUD"})
    (line,) = lines(stream)
    assert line["time"] != "yesterday" and line["level"] == "INFO"


def test_exceptions_and_multiline_messages_stay_on_one_line() -> None:
    logger, stream = logger_writing_json()
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("first line\nsecond line", extra={"event": "oops"})
    text = stream.getvalue()
    assert text.count("\n") == 1
    (line,) = lines(stream)
    assert line["message"] == "first line\nsecond line"
    assert "ValueError: bad" in str(line["exception"])
    assert "Traceback (most recent call last)" in str(line["exception"])


def test_stack_info_is_written() -> None:
    logger, stream = logger_writing_json()
    logger.info("where am I", stack_info=True)
    (line,) = lines(stream)
    assert "test_stack_info_is_written" in str(line["stack"])


def test_format_arguments_from_logging_config_are_accepted_and_ignored() -> None:
    # dictConfig's "class": form passes fmt/datefmt/style; the "()" form passes nothing.
    # (dictConfig itself is not called here: it shuts down every existing handler.)
    record = logging.makeLogRecord({"msg": "hello", "levelname": "INFO", "name": "app"})
    by_class = JsonFormatter("ignored %(message)s", datefmt="%H", style="%", validate=True)
    assert json.loads(by_class.format(record)) == json.loads(JsonFormatter().format(record))
    assert json.loads(by_class.format(record))["message"] == "hello"
