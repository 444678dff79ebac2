"""``durableflow worker``: with ``--loop uvloop`` it runs its workflows on uvloop; once
started, it has frozen its startup objects (``gc.freeze``); checking the schema when it
starts did not load alembic or SQLAlchemy."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from apps.harness import Processes

from durableflow import Flow, FlowContext

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]


async def ask_a_worker(
    processes: Processes, database_url: str, workflow: str, *worker_args: str
) -> Any:
    """What ``workflow`` of ``apps.loop_app`` returns, run by a ``durableflow worker``
    process started with ``worker_args``; the worker is stopped (SIGTERM, exit 0) after."""
    worker = processes.worker(
        "loop-worker",
        "apps.loop_app:flow",
        {"DURABLEFLOW_DATABASE_URL": database_url},
        *worker_args,
    )
    await worker.wait_for_output("running", timeout=30, stream="stdout")
    client = Flow(database_url=database_url)

    @client.workflow(name=workflow, version=1)
    async def in_the_worker(ctx: FlowContext) -> Any:
        raise AssertionError("runs in the worker process, not here")

    async with client:
        run_id = await client.start(workflow, queue="default")
        answer = await client.result(run_id, timeout=30)
    worker.send(signal.SIGTERM)
    assert await worker.wait_exit(15) == 0, worker.describe()
    return answer


async def test_a_worker_started_with_loop_uvloop_runs_workflows_on_uvloop(
    database_url: str, processes: Processes
) -> None:
    pytest.importorskip("uvloop", reason="uvloop (the `fast` extra) is not installed")
    loop = await ask_a_worker(processes, database_url, "loop.which", "--loop", "uvloop")
    assert loop == "uvloop.Loop"


async def test_loop_uvloop_without_uvloop_installed_is_a_clear_error(
    processes: Processes, tmp_path: Path
) -> None:
    # The children run in tmp_path, first on their sys.path: a uvloop that fails to import.
    (tmp_path / "uvloop.py").write_text("raise ImportError('no uvloop here')\n")
    done = await processes.run(["worker", "apps.loop_app:flow", "--loop", "uvloop"])
    assert done.returncode == 2, done
    assert "pip install 'durableflow[fast]'" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_started_worker_has_frozen_its_startup_objects(
    database_url: str, processes: Processes
) -> None:
    # Unfrozen, the collector's oldest generation walks every module, the app and the
    # worker's connections each time it runs: 40-50 ms of a stopped event loop.
    frozen = await ask_a_worker(processes, database_url, "loop.frozen")
    assert isinstance(frozen, int) and frozen > 10_000, frozen


async def test_a_worker_checks_its_schema_without_loading_alembic(
    database_url: str, processes: Processes
) -> None:
    # They would be half the objects of the worker's heap (before the freeze, and for
    # good in a worker started by flow.start_worker() inside a service).
    assert await ask_a_worker(processes, database_url, "loop.migration_modules") == []
