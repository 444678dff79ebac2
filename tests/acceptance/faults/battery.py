"""One scenario of the fault battery: its world, its workload, and its verdict.

The world: a fresh migrated database on the private cluster, two worker processes
(``durableflow worker apps.battery_app:flow``) each reaching it through a proxy of its
own, and the independent ledger on the suite's ordinary Postgres. Each worker serves
the ``default`` queue and a queue of its own (``only-a``, ``only-b``), so that at the
end new runs can be aimed at each surviving worker.

The workload: ``size.runs`` ten-step runs, all started before any fault, paced (the
pause of each step) so that in the absence of faults they would take a little longer
than the fault schedule. The faults therefore land mid-run.

The verdict, the same at every size:

* **failed**: runs that reached a final status other than ``succeeded``;
* **stuck**: runs not final ``settle_bound`` seconds after the last fault;
* **lost**: started runs that have no row at all;
* **wrong**: succeeded runs whose output or checkpoints are not exactly what ten
  steps produce;
* **after-commit executions**: ledger rows of a step body that started after that
  step's checkpoint had committed (the checkpoint's ``finished_at`` is its statement's
  transaction time, so it precedes the commit), except those of a worker paused on
  purpose (a zombie) after its pause began;
* every worker process not killed on purpose is alive, heartbeats (its heartbeat is
  at most twice the lease TTL old), and completes new runs aimed at it within
  ``fresh_bound`` seconds.

It also measures **re-executed steps** (step bodies run more than once: allowed when a
process died between the side effect and the checkpoint) and **recovery seconds**: the
longest any run in flight was held up, i.e. the longest time between two consecutive
checkpoints of one run (or its last checkpoint and its outcome), less the step pause.
Without faults it is close to zero; a run that waited for a lease to expire, or for
Postgres to come back, shows it. Also reported: how long after the last fault every
run was final.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from apps import battery_app
from apps.harness import ChildProcess, Processes

from faults.cluster import PrivateCluster
from faults.proxy import BlackholeProxy
from faults.sizes import LEASE_TTL, WORKER_SETTINGS, BatterySize
from faults.verdict import Execution, Pause, judge_ledger, longest_hold_up

APP = "apps.battery_app:flow"
FINAL = ("succeeded", "failed", "cancelled", "dead")
MONITOR_APPLICATION = "faults-monitor"  # the battery's own connections, spared by faults
MONITOR_INTERVAL = 0.25
WORKER_START_TIMEOUT = 90.0
FRESH_PAUSE = 0.02
# Seconds of work each scenario's runs would take without faults, per second of faults:
# a little more than the fault schedule, so every fault lands while runs are in flight.
WORKLOAD_MARGIN = 1.3


@dataclass
class ScenarioReport:
    """What one scenario measured, and what went wrong (``problems`` empty: passed)."""

    scenario: str
    size: str
    runs: int
    succeeded: int = 0
    failed: int = 0
    stuck: int = 0
    lost: int = 0
    wrong: int = 0
    re_executed: int = 0
    after_commit: int = 0
    zombie_executions: int = 0
    recovery_seconds: float | None = None
    settled_seconds: float | None = None
    workers_serving: str = ""
    faults: str = ""
    progress_at_first_fault: str = ""
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        recovery = "never" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f}s"
        settled = "never" if self.settled_seconds is None else f"{self.settled_seconds:.1f}s"
        return (
            f"[{self.scenario}] runs={self.runs} succeeded={self.succeeded} "
            f"failed={self.failed} stuck={self.stuck} lost={self.lost} wrong={self.wrong} "
            f"re-executed={self.re_executed} after-commit={self.after_commit} "
            f"zombie={self.zombie_executions} recovery={recovery} settled={settled} "
            f"serving={self.workers_serving} faults: {self.faults} ({self.seconds:.0f}s)"
        )


@dataclass
class WorkerSlot:
    """Worker ``a`` or ``b``: its proxy, its current process, the ones killed on purpose."""

    name: str
    proxy: BlackholeProxy
    process: ChildProcess
    generation: int = 1
    killed: list[ChildProcess] = field(default_factory=list)

    @property
    def queue(self) -> str:
        return f"only-{self.name}"


class Monitor:
    """Polls the private cluster directly (never through a proxy) while the faults happen.

    Its connection is named ``faults-monitor`` so the backend-termination scenario can
    spare it; any error just means "no sample now, reconnect next time".
    """

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection: asyncpg.Connection | None = None
        self.samples: list[tuple[float, int, int]] = []  # (monotonic, steps, final runs)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="faults-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None

    @property
    def latest(self) -> tuple[float, int, int] | None:
        return self.samples[-1] if self.samples else None

    def all_final_at(self, runs: int) -> float | None:
        """When every run was first seen final (monotonic), or None."""
        return next((t for t, _, final in self.samples if final >= runs), None)

    async def _run(self) -> None:
        while True:
            try:
                if self._connection is None or self._connection.is_closed():
                    self._connection = await asyncpg.connect(
                        self._url,
                        timeout=2,
                        server_settings={"application_name": MONITOR_APPLICATION},
                    )
                row = await self._connection.fetchrow(
                    "SELECT (SELECT count(*) FROM durableflow.steps) AS steps, "
                    "(SELECT count(*) FROM durableflow.runs WHERE status = ANY($1)) AS final",
                    list(FINAL),
                    timeout=2,
                )
                self.samples.append((time.monotonic(), row["steps"], row["final"]))
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if self._connection is not None:
                    self._connection.terminate()
                    self._connection = None
            await asyncio.sleep(MONITOR_INTERVAL)


async def query_with_retry(url: str, sql: str, *args: Any, timeout: float = 60.0) -> list[Any]:
    """Run one read on a fresh connection, retrying while the server is unreachable."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            connection = await asyncpg.connect(
                url, timeout=5, server_settings={"application_name": MONITOR_APPLICATION}
            )
            try:
                return list(await connection.fetch(sql, *args, timeout=30))
            finally:
                await connection.close()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


class Battery:
    """One scenario's world (see the module docstring)."""

    def __init__(
        self,
        scenario: str,
        size: BatterySize,
        *,
        cluster: PrivateCluster,
        database_url: str,
        ledger_url: str,
        processes: Processes,
        log_dir: Path,
    ) -> None:
        self.scenario = scenario
        self.size = size
        self.cluster = cluster
        self.database_url = database_url
        self.ledger_url = ledger_url
        self.processes = processes
        self.log_dir = log_dir
        self.report = ScenarioReport(scenario, size.name, size.runs)
        self.slots: dict[str, WorkerSlot] = {}
        self.run_ids: list[UUID] = []
        self.inputs: dict[UUID, int] = {}
        self.pause = 0.0
        self.pauses: list[Pause] = []
        self.monitor = Monitor(database_url)
        self.began = time.monotonic()
        self.workload_started_at: float | None = None
        self.last_fault_at: float | None = None
        self.fault_notes: list[str] = []
        self._first_fault_seen = False

    # -- workers -----------------------------------------------------------------------

    def worker_url(self, proxy: BlackholeProxy) -> str:
        database = self.database_url.rsplit("/", 1)[1]
        return f"postgresql://postgres@127.0.0.1:{proxy.port}/{database}"

    def _spawn(self, name: str, proxy: BlackholeProxy, generation: int) -> ChildProcess:
        env = {
            "DURABLEFLOW_DATABASE_URL": self.worker_url(proxy),
            "LEDGER_DATABASE_URL": self.ledger_url,
            **WORKER_SETTINGS,
        }
        process = self.processes.worker(
            f"worker-{name}-{generation}",
            APP,
            env,
            "--concurrency",
            str(self.size.concurrency),
            "--queue",
            "default",
            "--queue",
            f"only-{name}",
        )
        self.cluster.guard_process(process.pid)
        return process

    async def start_workers(self) -> None:
        for name in ("a", "b"):
            proxy = BlackholeProxy(
                "127.0.0.1",
                self.cluster.port,
                name=f"{self.scenario}-{name}",
                latency=self.size.network_latency,
            )
            proxy.start()
            self.slots[name] = WorkerSlot(name, proxy, self._spawn(name, proxy, 1))
        for slot in self.slots.values():
            await self.wait_worker_ready(slot.process)

    async def wait_worker_ready(self, process: ChildProcess) -> None:
        await process.wait_for_output(
            "durableflow worker", timeout=WORKER_START_TIMEOUT, stream="stdout"
        )

    async def restart_worker(self, slot: WorkerSlot) -> None:
        """A replacement process for a worker that was killed on purpose."""
        slot.generation += 1
        slot.process = self._spawn(slot.name, slot.proxy, slot.generation)
        await self.wait_worker_ready(slot.process)

    def all_processes(self) -> list[ChildProcess]:
        return [p for slot in self.slots.values() for p in (*slot.killed, slot.process)]

    def close(self) -> None:
        """Kill every worker (the ``processes`` fixture would too) and close the proxies."""
        for process in self.all_processes():
            process.kill()
            self.cluster.forget_process(process.pid)
        for slot in self.slots.values():
            slot.proxy.close()

    # -- workload ------------------------------------------------------------------------

    def step_pause(self, fault_seconds: float) -> float:
        """The pause per step that makes the workload outlast ``fault_seconds`` of faults."""
        in_flight = 2 * self.size.concurrency
        steps = self.size.runs * battery_app.STEPS
        pause = WORKLOAD_MARGIN * fault_seconds * in_flight / steps
        return round(min(max(pause, 0.02), 3.0), 3)

    async def start_runs(self, pause: float) -> None:
        """Start every run of the workload (directly, not through a proxy), then wait
        until the first checkpoint commits: from then on the workload is in flight."""
        self.pause = pause
        client = battery_app.build_flow(self.database_url)
        async with client:
            self.run_ids = list(
                await asyncio.gather(
                    *(
                        client.start(
                            battery_app.WORKFLOW,
                            input=battery_app.BatteryInput(start=index, pause=pause),
                            queue="default",
                        )
                        for index in range(self.size.runs)
                    )
                )
            )
        self.inputs = {run_id: index for index, run_id in enumerate(self.run_ids)}
        self.monitor.start()
        deadline = time.monotonic() + 60
        while not (self.monitor.latest and self.monitor.latest[1] > 0):
            if time.monotonic() > deadline:
                raise AssertionError(
                    "no checkpoint committed within 60s of starting the runs\n"
                    + self.describe_workers()
                )
            await asyncio.sleep(0.05)
        self.workload_started_at = time.monotonic()

    # -- faults ------------------------------------------------------------------------

    def fault_injected(self) -> None:
        """Call as each fault is injected: records the progress the first one met."""
        if not self._first_fault_seen:
            self._first_fault_seen = True
            latest = self.monitor.latest
            total = self.size.runs * battery_app.STEPS
            committed = latest[1] if latest else 0
            self.report.progress_at_first_fault = f"{committed}/{total} checkpoints"
            if committed >= total:
                self.report.problems.append(
                    f"the first fault landed after all {total} checkpoints had committed: "
                    "the workload is too short for the fault schedule"
                )
        self.last_fault_at = time.monotonic()

    def fault_ended(self) -> None:
        """Call when a fault is over (the server is back, the worker resumed, ...)."""
        self.last_fault_at = time.monotonic()

    async def at_offset(self, seconds: float) -> None:
        """Sleep until ``seconds`` after the workload started."""
        assert self.workload_started_at is not None
        delay = self.workload_started_at + seconds - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)

    # -- settling and verdict --------------------------------------------------------------

    async def settle(self) -> None:
        """Wait until every run is final, or ``settle_bound`` after the last fault."""
        assert self.last_fault_at is not None
        deadline = self.last_fault_at + self.size.settle_bound
        while time.monotonic() < deadline:
            if self.monitor.all_final_at(self.size.runs) is not None:
                break
            await asyncio.sleep(0.2)
        await self.monitor.stop()
        done_at = self.monitor.all_final_at(self.size.runs)
        if done_at is not None:
            self.report.settled_seconds = max(0.0, done_at - self.last_fault_at)

    async def verify(self) -> ScenarioReport:
        """Count outcomes, compare the ledger with the checkpoints, check the workers."""
        report = self.report
        report.faults = "; ".join(self.fault_notes)
        await asyncio.to_thread(self.cluster.ensure_running)
        await self._check_runs()
        await self._check_workers()
        report.seconds = time.monotonic() - self.began
        return report

    async def _check_runs(self) -> None:
        report = self.report
        runs = {
            row["id"]: row
            for row in await query_with_retry(
                self.database_url,
                "SELECT id, status, output::text AS output, error::text AS error, finished_at "
                "FROM durableflow.runs WHERE id = ANY($1)",
                self.run_ids,
            )
        }
        steps = await query_with_retry(
            self.database_url,
            "SELECT run_id, step_id, finished_at FROM durableflow.steps WHERE run_id = ANY($1)",
            self.run_ids,
        )
        ledger = await query_with_retry(
            self.ledger_url,
            "SELECT run_id, step_id, pid, recorded_at FROM public.ledger WHERE run_id = ANY($1)",
            self.run_ids,
        )
        statuses = Counter(row["status"] for row in runs.values())
        report.succeeded = statuses["succeeded"]
        report.failed = sum(count for status, count in statuses.items() if status in FINAL[1:])
        report.stuck = sum(count for status, count in statuses.items() if status not in FINAL)
        report.lost = len(set(self.run_ids) - set(runs))

        checkpoints: dict[UUID, dict[int, datetime]] = defaultdict(dict)
        for row in steps:
            checkpoints[row["run_id"]][row["step_id"]] = row["finished_at"]
        report.wrong = sum(
            1
            for run_id, row in runs.items()
            if row["status"] == "succeeded"
            and (
                row["output"] is None
                or json.loads(row["output"]) != battery_app.expected_output(self.inputs[run_id])
                or sorted(checkpoints[run_id]) != list(range(battery_app.STEPS))
            )
        )

        finished = {
            run_id: runs[run_id]["finished_at"] if run_id in runs else None
            for run_id in self.run_ids
        }
        report.recovery_seconds = longest_hold_up(finished, checkpoints, self.pause)

        # Ledger times are the ledger server's clock, checkpoint times the cluster's: on
        # one machine they agree, but the ledger server may be elsewhere.
        verdict = judge_ledger(
            (
                Execution(row["run_id"], row["step_id"], row["pid"], row["recorded_at"])
                for row in ledger
            ),
            checkpoints,
            self.pauses,
            ledger_clock_ahead=await self._ledger_clock_ahead(),
        )
        after_commit, unexecuted = verdict.after_commit, verdict.unexecuted
        report.after_commit = len(after_commit)
        report.zombie_executions = verdict.zombie_executions
        report.re_executed = verdict.re_executed

        errors = Counter(_error_label(row["error"]) for row in runs.values() if row["error"])
        report.errors = [f"{count} x {label}" for label, count in errors.most_common(5)]
        if report.failed:
            report.problems.append(
                f"{report.failed} of {report.runs} runs failed: " + " | ".join(report.errors)
            )
        if report.stuck:
            unfinished = Counter(
                row["status"] for row in runs.values() if row["status"] not in FINAL
            )
            report.problems.append(
                f"{report.stuck} runs were not final {self.size.settle_bound:.0f}s after the "
                f"last fault: {dict(unfinished)}"
            )
        if report.lost:
            report.problems.append(f"{report.lost} started runs have no row in durableflow.runs")
        if report.wrong:
            report.problems.append(
                f"{report.wrong} succeeded runs have a wrong output or not exactly "
                f"{battery_app.STEPS} checkpoints"
            )
        if after_commit:
            report.problems.append(
                f"{len(after_commit)} step bodies started after their checkpoint had "
                "committed: " + "; ".join(after_commit[:5])
            )
        if unexecuted:
            report.problems.append(
                f"{len(unexecuted)} checkpoints have no execution in the ledger: {unexecuted[:3]}"
            )

    async def _ledger_clock_ahead(self) -> timedelta:
        """How far the ledger server's clock is ahead of the private cluster's."""

        async def offset(url: str) -> float:
            # The server's clock minus ours, read at the middle of the round trip.
            before = time.time()
            rows = await query_with_retry(url, "SELECT clock_timestamp() AS now")
            after = time.time()
            return float(rows[0]["now"].timestamp()) - (before + after) / 2

        ahead = await offset(self.ledger_url) - await offset(self.database_url)
        # Within a few milliseconds it is measurement noise: one machine, one clock.
        return timedelta(seconds=ahead if abs(ahead) > 0.05 else 0.0)

    async def _check_workers(self) -> None:
        """Every worker not killed on purpose is alive and completes new runs of its own."""
        report = self.report
        alive = [slot for slot in self.slots.values() if slot.process.returncode is None]
        for slot in self.slots.values():
            if slot.process.returncode is not None:
                report.problems.append(
                    f"worker {slot.name} (pid {slot.process.pid}) exited with "
                    f"{slot.process.returncode} though nobody killed it"
                )
        serving = await self._fresh_runs_complete(alive)
        beating = await self._heartbeating(alive)
        healthy = [slot for slot in serving if slot in beating]
        report.workers_serving = f"{len(healthy)}/{len(self.slots)}"

    async def _heartbeating(self, slots: Sequence[WorkerSlot]) -> list[WorkerSlot]:
        """Workers whose heartbeat is fresh: otherwise any worker takes their runs away."""
        rows = await query_with_retry(
            self.database_url,
            "SELECT id, extract(epoch FROM durableflow.clock_now() - heartbeat_at) AS age "
            "FROM durableflow.workers",
        )
        ages = {int(row["id"].split(":")[-2]): float(row["age"]) for row in rows}
        beating = []
        for slot in slots:
            age = ages.get(slot.process.pid)
            if age is not None and age <= 2 * LEASE_TTL:
                beating.append(slot)
                continue
            self.report.problems.append(
                f"worker {slot.name} (pid {slot.process.pid}) "
                + (
                    "has no row in durableflow.workers"
                    if age is None
                    else f"last heartbeated {age:.0f}s ago (lease TTL {LEASE_TTL:.0f}s)"
                )
                + ": other workers take its runs away"
            )
        return beating

    async def _fresh_runs_complete(self, slots: Sequence[WorkerSlot]) -> list[WorkerSlot]:
        report = self.report
        fresh: dict[str, list[UUID]] = {}
        try:
            client = battery_app.build_flow(self.database_url)
            async with client:
                for slot in slots:
                    fresh[slot.name] = [
                        await client.start(
                            battery_app.WORKFLOW,
                            input=battery_app.BatteryInput(start=index, pause=FRESH_PAUSE),
                            queue=slot.queue,
                        )
                        for index in range(self.size.fresh_runs)
                    ]
        except Exception as exc:
            report.problems.append(
                f"starting new runs after the faults failed: {type(exc).__name__}: {exc}"
            )
            return []
        all_ids = [run_id for ids in fresh.values() for run_id in ids]
        deadline = time.monotonic() + self.size.fresh_bound
        statuses: dict[UUID, str] = {}
        while time.monotonic() < deadline:
            rows = await query_with_retry(
                self.database_url,
                "SELECT id, status FROM durableflow.runs WHERE id = ANY($1)",
                all_ids,
            )
            statuses = {row["id"]: row["status"] for row in rows}
            if all(statuses.get(run_id) in FINAL for run_id in all_ids):
                break
            await asyncio.sleep(0.2)
        ledger = await query_with_retry(
            self.ledger_url,
            "SELECT run_id, pid FROM public.ledger WHERE run_id = ANY($1)",
            all_ids,
        )
        pids: dict[UUID, set[int]] = defaultdict(set)
        for row in ledger:
            pids[row["run_id"]].add(row["pid"])
        serving = []
        for slot in slots:
            ids = fresh[slot.name]
            done = [run_id for run_id in ids if statuses.get(run_id) == "succeeded"]
            strangers = {pid for run_id in ids for pid in pids[run_id]} - {slot.process.pid}
            if len(done) == len(ids) and not strangers:
                serving.append(slot)
                continue
            states = Counter(statuses.get(run_id, "missing") for run_id in ids)
            report.problems.append(
                f"worker {slot.name} (pid {slot.process.pid}) did not serve new runs: "
                f"{len(done)}/{len(ids)} of the runs on its queue {slot.queue!r} succeeded "
                f"within {self.size.fresh_bound:.0f}s ({dict(states)})"
                + (f", executed by other pids {sorted(strangers)}" if strangers else "")
            )
        return serving

    # -- reporting -----------------------------------------------------------------------

    def describe_workers(self) -> str:
        parts = [process.describe() for process in self.all_processes()]
        parts.append(f"--- private cluster log (tail) ---\n{self.cluster.log_tail(3000)}")
        parts.append(f"(full worker logs in {self.log_dir})")
        return "\n".join(parts)

    def inspection(self) -> str:
        """Where to look at a held world: worker pids, cluster URL, log directory."""
        workers = ", ".join(
            f"{slot.name}: pid {slot.process.pid} via proxy port {slot.proxy.port}"
            for slot in self.slots.values()
        )
        return f"workers {workers}; database {self.database_url}; logs {self.log_dir}"

    async def dump_worker_tasks(self) -> None:
        """Have every live worker print its asyncio tasks (and dead loops) on stderr."""
        live = [slot.process for slot in self.slots.values() if slot.process.returncode is None]
        for process in live:
            with contextlib.suppress(ProcessLookupError):
                process.send(signal.SIGCONT)  # a paused worker cannot print
                process.send(signal.SIGUSR1)
        if live:
            await asyncio.sleep(1.0)

    def failure_message(self) -> str:
        lines = [self.report.summary(), "problems:"]
        lines += [f"  - {problem}" for problem in self.report.problems]
        lines.append(self.describe_workers())
        for slot in self.slots.values():
            text = slot.process.stderr()
            start = text.rfind("TASKS ")
            if start >= 0:
                lines.append(f"--- worker {slot.name} asyncio tasks (SIGUSR1) ---")
                lines.append(_without_events(text[start:])[:8000])
        return "\n".join(lines)


def _without_events(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("EVENT "))


def _error_label(error: str) -> str:
    """A run's recorded error, short: ``Type: message`` cut at 160 characters."""
    try:
        data = json.loads(error)
    except ValueError:
        return error[:160]
    label = f"{data.get('type', '?')}: {data.get('message', '')}"
    return label[:160]
