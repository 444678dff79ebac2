"""``tests/_logs.py`` leaves out asyncpg's left-behind future and nothing else."""

from __future__ import annotations

import logging

from _logs import error_messages


def record(name: str, level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_only_asyncpgs_left_behind_future_is_left_out() -> None:
    left_behind = (
        "Future exception was never retrieved\nfuture: <Future finished "
        "exception=ConnectionError('unexpected connection_lost() call')>"
    )
    other_future = "Future exception was never retrieved\nfuture: <Future exception=KeyError()>"
    records = [
        record("asyncio", logging.ERROR, left_behind),
        record("asyncio", logging.ERROR, other_future),
        record("durableflow.worker", logging.ERROR, "unexpected connection_lost() call"),
        record("durableflow.worker", logging.WARNING, "retrying"),
    ]
    assert error_messages(records) == [other_future, "unexpected connection_lost() call"]
