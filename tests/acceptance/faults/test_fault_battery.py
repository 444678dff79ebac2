"""The fault battery of issue #7: no run fails, is lost or stuck because of a fault.

Five scenarios, each over ``runs`` ten-step runs on two worker processes against a
private Postgres cluster (see ``battery.py`` for what is counted and asserted, and
``sizes.py`` for the CI and full sizes): Postgres killed and restarted, every backend
terminated once a second, kill -9 of workers, a worker paused past its lease, and a
worker whose open connections are blackholed. The assertions are the same at every
size: zero runs failed, stuck or lost; no step body started after its checkpoint
committed (except by a paused zombie); every worker not killed on purpose alive and
serving new runs afterwards.

``make faults`` runs the full size and writes the per-scenario table.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from apps.harness import Processes

from faults.battery import Battery, ScenarioReport
from faults.cluster import PrivateCluster
from faults.scenarios import SCENARIOS, Scenario
from faults.sizes import battery_size

SIZE = battery_size()
# Keep a failed scenario's workers, proxies and cluster alive this many seconds before
# tearing down, to inspect them (py-spy dump --pid ..., psql on the cluster's port).
HOLD_SECONDS = float(os.environ.get("DURABLEFLOW_FAULTS_HOLD_SECONDS", "0"))

pytestmark = [pytest.mark.acceptance, pytest.mark.faults, pytest.mark.timeout(SIZE.test_timeout)]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[scenario.name for scenario in SCENARIOS])
async def test_fault_scenario(
    scenario: Scenario,
    private_cluster: PrivateCluster,
    fault_database: str,
    ledger_url: str,
    processes: Processes,
    fault_reports: list[ScenarioReport],
    tmp_path: Path,
) -> None:
    battery = Battery(
        scenario.name,
        SIZE,
        cluster=private_cluster,
        database_url=fault_database,
        ledger_url=ledger_url,
        processes=processes,
        log_dir=tmp_path,
    )
    try:
        await battery.start_workers()
        await battery.start_runs(battery.step_pause(scenario.planned_seconds(SIZE)))
        await scenario.inject(battery)
        await battery.settle()
        report = await battery.verify()
        fault_reports.append(report)
        print(report.summary())
        if not report.passed:
            await battery.dump_worker_tasks()
        if not report.passed and HOLD_SECONDS:
            print(f"holding the failed world for {HOLD_SECONDS:.0f}s: {battery.inspection()}")
            await asyncio.sleep(HOLD_SECONDS)
        assert report.passed, battery.failure_message()
    finally:
        await battery.monitor.stop()
        battery.close()
