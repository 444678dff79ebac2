"""``durableflow worker``: with ``--loop uvloop`` it runs its workflows on uvloop; once
started, it has frozen its startup objects (``gc.freeze``)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from apps.harness import Processes

from durableflow import Flow, FlowContext

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]


async def test_a_worker_started_with_loop_uvloop_runs_workflows_on_uvloop(
    database_url: str, processes: Processes
) -> None:
    pytest.importorskip("uvloop", reason="uvloop (the `fast` extra) is not installed")
    worker = processes.worker(
        "uvloop-worker",
        "apps.loop_app:flow",
        {"DURABLEFLOW_DATABASE_URL": database_url},
        "--loop",
        "uvloop",
    )
    await worker.wait_for_output("running", timeout=30, stream="stdout")
    client = Flow(database_url=database_url)

    @client.workflow(name="loop.which", version=1)
    async def which_loop(ctx: FlowContext) -> str:
        raise AssertionError("runs in the worker process, not here")

    async with client:
        run_id = await client.start("loop.which", queue="default")
        assert await client.result(run_id, timeout=30) == "uvloop.Loop"
    worker.send(signal.SIGTERM)
    assert await worker.wait_exit(15) == 0, worker.describe()


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
    worker = processes.worker(
        "frozen-worker", "apps.loop_app:flow", {"DURABLEFLOW_DATABASE_URL": database_url}
    )
    await worker.wait_for_output("running", timeout=30, stream="stdout")
    client = Flow(database_url=database_url)

    @client.workflow(name="loop.frozen", version=1)
    async def frozen_objects(ctx: FlowContext) -> int:
        raise AssertionError("runs in the worker process, not here")

    async with client:
        run_id = await client.start("loop.frozen", queue="default")
        frozen = await client.result(run_id, timeout=30)
    assert isinstance(frozen, int) and frozen > 10_000, frozen
    worker.send(signal.SIGTERM)
    assert await worker.wait_exit(15) == 0, worker.describe()
