"""The logging filter puts the current run, step and correlation id on every record."""

import asyncio
import logging
import time
import uuid

import pytest

from durableflow import ConfigurationError
from durableflow.observability import (
    RunContextFilter,
    correlation_scope,
    current_correlation_id,
    current_log_fields,
    current_run,
    current_step,
    install_log_context,
    run_scope,
    step_scope,
)
from durableflow.observability.context import LOG_FIELDS

RUN_ID = uuid.UUID("01900000-0000-7000-8000-000000000001")


class Collect(logging.Handler):
    """A real handler that keeps what it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def collect() -> Collect:
    return Collect()


@pytest.fixture
def log(collect: Collect) -> logging.Logger:
    """A private logger whose only handler carries the filter."""
    logger = logging.getLogger(f"test.observability.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(collect)
    install_log_context(collect)
    return logger


def fields(record: logging.LogRecord) -> dict[str, object]:
    return {name: getattr(record, name) for name in LOG_FIELDS}


NOTHING = dict.fromkeys(LOG_FIELDS)


def test_fields_are_set_inside_scopes(log: logging.Logger, collect: Collect) -> None:
    with run_scope(RUN_ID, "ingest", 3, "req-42"):
        log.info("in the workflow")
        with step_scope("fetch", 5, attempt=2):
            log.info("in the step")
    assert fields(collect.records[0]) == {
        **NOTHING,
        "run_id": str(RUN_ID),
        "workflow": "ingest",
        "workflow_version": 3,
        "correlation_id": "req-42",
    }
    assert fields(collect.records[1]) == {
        "run_id": str(RUN_ID),
        "workflow": "ingest",
        "workflow_version": 3,
        "step": "fetch",
        "step_id": 5,
        "attempt": 2,
        "correlation_id": "req-42",
    }


def test_fields_are_none_outside_scopes_so_formats_never_fail(collect: Collect) -> None:
    logger = logging.getLogger(f"test.observability.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.addHandler(collect)
    collect.setFormatter(logging.Formatter("%(run_id)s|%(step)s|%(attempt)s|%(message)s"))
    install_log_context(collect)
    logger.warning("no run here")
    assert fields(collect.records[0]) == NOTHING
    assert collect.format(collect.records[0]) == "None|None|None|no run here"


def test_values_passed_in_extra_win(log: logging.Logger, collect: Collect) -> None:
    with run_scope(RUN_ID, "ingest", 1, None), step_scope("fetch", 0):
        log.info("explicit", extra={"run_id": "given", "step": "other"})
    record = collect.records[0]
    assert (record.run_id, record.step, record.step_id) == ("given", "other", 0)


def test_nested_scopes_restore_what_was_current(log: logging.Logger, collect: Collect) -> None:
    other = uuid.UUID("01900000-0000-7000-8000-000000000002")
    with run_scope(RUN_ID, "outer", 1, "c-outer"):
        with step_scope("a", 0):
            with step_scope("b", 1, attempt=3):
                log.info("b")
            log.info("back in a")
            # A run started from inside a step does not inherit that step.
            with run_scope(other, "inner", 2, None):
                log.info("inner run")
            log.info("back in a again")
        log.info("outer, between steps")
    log.info("outside")
    seen = [(r.run_id, r.step, r.attempt, r.correlation_id) for r in collect.records]
    assert seen == [
        (str(RUN_ID), "b", 3, "c-outer"),
        (str(RUN_ID), "a", 1, "c-outer"),
        (str(other), None, None, None),
        (str(RUN_ID), "a", 1, "c-outer"),
        (str(RUN_ID), None, None, "c-outer"),
        (None, None, None, None),
    ]
    assert current_run() is None and current_step() is None


def test_scopes_restore_when_the_block_raises() -> None:
    with pytest.raises(KeyError), run_scope(RUN_ID, "wf", 1, "c"), step_scope("s", 0):
        raise KeyError("boom")
    assert current_log_fields() == NOTHING


async def test_a_task_created_inside_a_scope_inherits_it(
    log: logging.Logger, collect: Collect
) -> None:
    async def background() -> None:
        await asyncio.sleep(0)
        log.info("from the task")

    with run_scope(RUN_ID, "wf", 1, "c"), step_scope("spawner", 4):
        task = asyncio.create_task(background())
    # The scope has been left here, but the task's context was copied at creation.
    await task
    assert fields(collect.records[0])["step"] == "spawner"
    assert fields(collect.records[0])["run_id"] == str(RUN_ID)


async def test_concurrent_tasks_do_not_see_each_others_step(
    log: logging.Logger, collect: Collect
) -> None:
    both_inside = asyncio.Barrier(2)

    async def step(name: str, step_id: int) -> None:
        with step_scope(name, step_id):
            log.info("before %s", name)
            await both_inside.wait()  # both scopes are open at the same time
            log.info("after %s", name)

    with run_scope(RUN_ID, "wf", 1, None):
        await asyncio.gather(step("left", 0), step("right", 1))
        log.info("after gather")
    by_message = {r.getMessage(): (r.step, r.step_id) for r in collect.records}
    assert by_message == {
        "before left": ("left", 0),
        "before right": ("right", 1),
        "after left": ("left", 0),
        "after right": ("right", 1),
        "after gather": (None, None),
    }


async def test_runs_in_concurrent_tasks_keep_their_own_run(
    log: logging.Logger, collect: Collect
) -> None:
    async def run(n: int) -> None:
        with run_scope(f"run-{n}", "wf", 1, f"corr-{n}"):
            for _ in range(3):
                await asyncio.sleep(0)
                log.info("tick %d", n)

    await asyncio.gather(*(run(n) for n in range(4)))
    for record in collect.records:
        n = record.args[0]  # type: ignore[index]
        assert (record.run_id, record.correlation_id) == (f"run-{n}", f"corr-{n}")


def test_correlation_id_outside_runs_and_inside_them() -> None:
    assert current_correlation_id() is None
    with correlation_scope("req-1"):
        assert current_correlation_id() == "req-1"
        # A run carries its own recorded correlation id, even when it has none.
        with run_scope(RUN_ID, "wf", 1, None):
            assert current_correlation_id() is None
        with run_scope(RUN_ID, "wf", 1, "run-corr"):
            assert current_correlation_id() == "run-corr"
        assert current_correlation_id() == "req-1"
    assert current_correlation_id() is None


def test_install_is_idempotent(collect: Collect) -> None:
    install_log_context(collect)
    install_log_context(collect)
    assert sum(isinstance(f, RunContextFilter) for f in collect.filters) == 1


def test_install_on_a_logger_attaches_to_its_handlers(collect: Collect) -> None:
    logger = logging.getLogger(f"test.observability.{uuid.uuid4().hex}")
    second = Collect()
    logger.addHandler(collect)
    logger.addHandler(second)
    install_log_context(logger)
    assert all(
        sum(isinstance(f, RunContextFilter) for f in h.filters) == 1 for h in (collect, second)
    )


def test_install_with_no_argument_covers_records_of_every_logger(
    collect: Collect, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [collect])  # restored after the test
    monkeypatch.setattr(root, "level", logging.INFO)
    install_log_context()
    child = logging.getLogger(f"test.observability.{uuid.uuid4().hex}.deep.child")
    with run_scope(RUN_ID, "wf", 1, None), step_scope("s", 7):
        child.info("propagated to the root handler")
    assert (collect.records[0].run_id, collect.records[0].step_id) == (str(RUN_ID), 7)


def test_install_without_handlers_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    with pytest.raises(ConfigurationError, match=r"root logger has no handlers.*basicConfig"):
        install_log_context()
    lonely = logging.getLogger(f"test.observability.{uuid.uuid4().hex}")
    with pytest.raises(ConfigurationError, match="has no handlers"):
        install_log_context(lonely)


def test_install_rejects_something_that_is_not_a_logger_or_handler() -> None:
    with pytest.raises(ConfigurationError, match="not str"):
        install_log_context("durableflow")  # type: ignore[arg-type]


def test_step_scope_is_cheap() -> None:
    # A guard against accidental heavy work on the step hot path (the real figure,
    # well under a microsecond, is in docs/observability.md). The bound is loose
    # because CI machines are shared.
    rounds = 20_000
    with run_scope(RUN_ID, "wf", 1, None):
        started = time.perf_counter()
        for step_id in range(rounds):
            with step_scope("s", step_id):
                pass
        per_scope = (time.perf_counter() - started) / rounds
    assert per_scope < 20e-6, f"step_scope took {per_scope * 1e6:.1f} µs"
