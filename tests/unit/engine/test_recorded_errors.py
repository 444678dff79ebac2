"""Any exception a step raises can be recorded: the step's retries and its failure
record depend on it, so describing the error must never raise, nor be too large to
store."""

from __future__ import annotations

import json

from durableflow import NonRetryable
from durableflow.engine.serialization import MAX_ERROR_TEXT, describe_error, error_json


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for you")


class HopelessError(UnprintableError):
    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


def raised(exc: BaseException) -> BaseException:
    try:
        raise exc
    except BaseException as caught:
        return caught


def test_an_exception_whose_str_raises_is_still_recorded() -> None:
    error = describe_error(raised(UnprintableError("secret")))
    assert error["type"].endswith("UnprintableError")
    assert error["message"].startswith("<unprintable UnprintableError")
    assert "test_recorded_errors.py" in error["traceback"]
    json.loads(error_json(raised(UnprintableError())))


def test_an_exception_whose_str_and_repr_raise_is_still_recorded() -> None:
    error = describe_error(raised(HopelessError()))
    assert error["message"] == f"<unprintable {__name__}.HopelessError>"

    class UnprintableRefusal(NonRetryable):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    refused = describe_error(raised(UnprintableRefusal()))
    assert refused["non_retryable"] is True
    assert refused["message"].startswith("<unprintable ")


def test_huge_messages_are_cut_keeping_head_and_tail() -> None:
    message = "HEAD" + "x" * (10 * MAX_ERROR_TEXT) + "TAIL"
    error = describe_error(raised(ValueError(message)))
    for text in (error["message"], error["traceback"]):
        assert len(text) < MAX_ERROR_TEXT + 200
        assert "characters cut by durableflow" in text
    assert error["message"].startswith("HEAD") and error["message"].endswith("TAIL")
    assert error["traceback"].startswith("Traceback") and error["traceback"].endswith("TAIL\n")


def test_short_messages_are_kept_whole() -> None:
    message = "y" * MAX_ERROR_TEXT
    assert describe_error(raised(ValueError(message)))["message"] == message
