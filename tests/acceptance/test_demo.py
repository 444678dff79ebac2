"""``durableflow demo``: kill a worker mid-run, watch the run resume without redoing steps.

Run once against the test server and once with no database configured at all (the
embedded Postgres, as on a fresh clone).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from pathlib import Path

import psutil
import pytest
from apps.harness import Completed, Processes

pytestmark = pytest.mark.acceptance

EXPECTED_TOTAL = sum(order * 10 for order in range(1, 6))  # the demo prices orders 1..5


def check_demo_output(result: Completed) -> None:
    """The demo killed its first worker mid-run and the second one finished the run
    without running fetch_orders or price_orders again."""
    out = result.stdout
    assert result.returncode == 0, f"{out}\n{result.stderr}"
    first = re.search(r"first worker started \(pid (\d+)\)", out)
    second = re.search(r"second worker started \(pid (\d+)\)", out)
    assert first and second, out
    first_pid, second_pid = first.group(1), second.group(1)
    assert f"killed worker {first_pid} with SIGKILL" in out
    assert f"succeeded with output {EXPECTED_TOTAL}" in out

    # The steps table: one row per step, with the worker that ran it.
    table = dict(re.findall(r"^\s+\d+\s+(\w+)\s+(\d+)\s+\d+\s*$", out, flags=re.MULTILINE))
    assert table == {
        "fetch_orders": first_pid,
        "price_orders": first_pid,
        "build_report": second_pid,
        "publish": second_pid,
    }, out
    # The step bodies' own prints: the finished steps ran once, in the first worker only.
    assert out.count("fetch_orders: fetched 5 orders") == 1
    assert out.count("price_orders: priced 5 orders") == 1
    assert f"[worker {first_pid}] build_report: working" in out  # killed in there
    assert f"[worker {second_pid}] build_report: report ready" in out


@pytest.mark.timeout(120)
async def test_demo_on_the_test_server(database_url: str, processes: Processes) -> None:
    result = await processes.run(["demo"], {"DURABLEFLOW_DATABASE_URL": database_url}, timeout=90)
    check_demo_output(result)


@pytest.mark.timeout(240)
async def test_demo_with_no_database_configured_uses_embedded_postgres(
    tmp_path: Path, processes: Processes
) -> None:
    data_dir = tmp_path / "pgdata"
    try:
        result = await processes.run(
            ["demo"], {"DURABLEFLOW_EMBEDDED_DATA_DIR": str(data_dir)}, timeout=180
        )
        check_demo_output(result)
        assert "embedded" in result.stderr.lower()
        # The embedded server stops once the demo and its workers are gone.
        await _wait_for_no_postgres(data_dir, timeout=30)
    finally:
        _kill_postgres(data_dir)


def _postgres_processes(data_dir: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if str(data_dir) in " ".join(process.info["cmdline"] or []):
                found.append(process)
    return found


async def _wait_for_no_postgres(data_dir: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while left := _postgres_processes(data_dir):
        if time.monotonic() > deadline:
            raise AssertionError(f"embedded Postgres still running after the demo: {left}")
        await asyncio.sleep(0.2)


def _kill_postgres(data_dir: Path) -> None:
    """If the test failed half-way, stop the server the demo started in our tmp dir:
    a fast shutdown for the postmaster, SIGTERM (clean exit) for the keeper."""
    for process in _postgres_processes(data_dir):
        with contextlib.suppress(psutil.Error):
            is_postmaster = process.name().startswith("postgres")
            os.kill(process.pid, signal.SIGINT if is_postmaster else signal.SIGTERM)
