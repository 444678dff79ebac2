"""Artefacts with real worker and CLI processes:

- kill -9 between an artefact's write and its checkpoint: the re-run overwrites the
  orphan, and the checkpoint points at the object it wrote (ledger-checked);
- the CLI's lineage and replay on that run;
- a prune killed half-way is finished by the second call; a running run is refused;
- a prune by age draws a progress bar on a terminal, and none when piped or with --json;
- a 200 MB artefact streamed by a step keeps the worker under 150 MiB RSS.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import signal
import time
from pathlib import Path
from uuid import UUID

import asyncpg
import psutil
import pytest
from apps import artefact_app
from apps.harness import FAST_WORKER_SETTINGS, Processes

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

APP = "apps.artefact_app:flow"


def _env(database_url: str, root: Path, **extra: str) -> dict[str, str]:
    return {
        "DURABLEFLOW_DATABASE_URL": database_url,
        "ARTEFACT_ROOT": str(root),
        **FAST_WORKER_SETTINGS,
        **extra,
    }


def _sidecar(root: Path, key: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((root / (key + ".meta.json")).read_text())
    return loaded


def _object_sha256(root: Path, key: str) -> str:
    return hashlib.sha256((root / key).read_bytes()).hexdigest()


async def test_kill_9_between_artefact_and_checkpoint_the_rerun_overwrites_the_orphan(
    ledger_url: str, db: asyncpg.Connection, processes: Processes, tmp_path: Path
) -> None:
    root = tmp_path / "artefacts"
    client = artefact_app.build_flow(ledger_url, str(root))
    async with client:
        run_id = await client.start(
            artefact_app.PIPELINE, input="https://x.test/a", queue="default"
        )
        worker_a = processes.worker(
            "worker-a", APP, _env(ledger_url, root, PAUSE_AFTER_WRITE="/convert/")
        )
        key = f"executions/{run_id}/{artefact_app.PIPELINE}/convert/1.json"
        await worker_a.wait_for_output(f"PAUSED {key}", timeout=30)

        # The orphan: object and sidecar stored, no checkpoint, no lineage row.
        orphan = _sidecar(root, key)
        assert orphan["sha256"] == _object_sha256(root, key)
        assert str(orphan["worker"]).split(":")[1] == str(worker_a.pid)
        assert (
            await db.fetchval(
                "SELECT count(*) FROM durableflow.steps WHERE run_id = $1 AND step_id = 1", run_id
            )
            == 0
        )
        worker_a.send(signal.SIGKILL)
        assert await worker_a.wait_exit(5) == -signal.SIGKILL

        worker_b = processes.worker("worker-b", APP, _env(ledger_url, root))
        result = await client.result(run_id, timeout=60)
        assert result == "https://x.test/a: 3 words"

        rewritten = _sidecar(root, key)
        assert str(rewritten["worker"]).split(":")[1] == str(worker_b.pid)
        assert str(rewritten["written_at"]) > str(orphan["written_at"])
        steps = await db.fetch(
            "SELECT step_id, artefact_key, artefact_sha256, output->>'pid' AS pid "
            "FROM durableflow.steps WHERE run_id = $1 ORDER BY step_id",
            run_id,
        )
        assert [row["step_id"] for row in steps] == [0, 1, 2]
        for row in steps:  # every checkpoint points at the object that is stored now
            assert row["artefact_sha256"] == _object_sha256(root, row["artefact_key"])
        assert steps[1]["pid"] == str(worker_b.pid)
        lineage = await db.fetch(
            "SELECT key, sha256 FROM durableflow.lineage WHERE run_id = $1", run_id
        )
        assert {row["key"]: row["sha256"] for row in lineage} == {
            row["artefact_key"]: row["artefact_sha256"] for row in steps
        }
        stored = sorted(p.name for p in (root / "executions" / str(run_id)).rglob("*.json"))
        assert stored == [
            "0.json",
            "0.json.meta.json",
            "1.json",
            "1.json.meta.json",
            "2.json",
            "2.json.meta.json",
        ]

        # The ledger: fetch committed before the kill and ran once; convert ran in A
        # (its checkpoint never committed) and again in B.
        ledger = await db.fetch(
            "SELECT step_id, pid FROM public.ledger WHERE run_id = $1 ORDER BY id", run_id
        )
        assert [(row["step_id"], row["pid"]) for row in ledger] == [
            (0, worker_a.pid),
            (1, worker_a.pid),
            (1, worker_b.pid),
            (2, worker_b.pid),
        ]

        # The CLI: lineage of the summary, then a replay from convert run by B.
        env = _env(ledger_url, root)
        summary_key = steps[2]["artefact_key"]
        lineage_cli = await processes.run(["lineage", summary_key, "--json", "--app", APP], env)
        assert lineage_cli.returncode == 0, lineage_cli
        walked = json.loads(lineage_cli.stdout)
        assert [(node["key"], node["depth"]) for node in walked] == [
            (summary_key, 0),
            (key, 1),
            (steps[0]["artefact_key"], 2),
        ]
        # The storage commands, as processes: the run's artefacts and a sidecar.
        storage = root.as_uri()
        listed = await processes.run(
            ["storage", "ls", f"executions/{run_id}", "--storage", storage], env
        )
        assert listed.returncode == 0, listed
        assert sorted(listed.stdout.splitlines()) == sorted(row["artefact_key"] for row in steps)
        sidecar = await processes.run(
            ["storage", "metadata", summary_key, "--storage", storage], env
        )
        assert sidecar.returncode == 0, sidecar
        assert json.loads(sidecar.stdout)["sha256"] == steps[2]["artefact_sha256"]
        missing = await processes.run(
            [
                "storage",
                "metadata",
                f"executions/{run_id}/nothing/here/0.json",
                "--storage",
                storage,
            ],
            env,
        )
        assert missing.returncode == 1 and "no artefact stored under" in missing.stderr, missing
        replay_cli = await processes.run(
            ["runs", "replay", str(run_id), "--from-stage", "convert", "--json", "--app", APP],
            env,
        )
        assert replay_cli.returncode == 0, replay_cli
        replayed = UUID(json.loads(replay_cli.stdout)["run_id"])
        assert await client.result(replayed, timeout=60) == result
        replayed_steps = await db.fetch(
            "SELECT step_id FROM public.ledger WHERE run_id = $1 ORDER BY id", replayed
        )
        assert [row["step_id"] for row in replayed_steps] == [1, 2]  # fetch republished

        # Fork from the summary step, and watch the fork to its end.
        fork_cli = await processes.run(
            ["runs", "fork", str(run_id), "--from-step", "summarise", "--json", "--app", APP], env
        )
        assert fork_cli.returncode == 0, fork_cli
        forked = json.loads(fork_cli.stdout)["run_id"]
        watch_cli = await processes.run(["runs", "watch", forked, "--json", "--app", APP], env)
        assert watch_cli.returncode == 0, watch_cli
        events = [json.loads(line) for line in watch_cli.stdout.splitlines()]
        assert events[-1]["kind"] == "status_changed" and events[-1]["status"] == "succeeded"
        assert {(e["kind"], e["name"]) for e in events if e["step_id"] == 2} == {
            ("artefact_written", "summarise"),
            ("step_finished", "summarise"),
        }
        assert {e["step_id"] for e in events if e["kind"] == "step_finished"} == {0, 1, 2}
        worker_b.send(signal.SIGTERM)
        await worker_b.wait_exit(30)


async def test_a_prune_killed_half_way_is_finished_by_the_second_call(
    database_url: str, db: asyncpg.Connection, processes: Processes, tmp_path: Path
) -> None:
    root = tmp_path / "artefacts"
    flow = artefact_app.build_flow(database_url, str(root), ledger=False)
    async with flow:
        async with flow.worker(concurrency=5):
            run_ids = [
                await flow.start(artefact_app.PIPELINE, input=f"https://x.test/{i}")
                for i in range(5)
            ]
            for run_id in run_ids:
                await flow.result(run_id, timeout=30)
        queued = await flow.start(artefact_app.PIPELINE, input="https://x.test/later")

    env = _env(database_url, root)
    refused = await processes.run(["runs", "prune", str(queued), "--app", APP], env)
    assert refused.returncode == 1 and "cannot prune run" in refused.stderr, refused

    prune_a = processes.start(
        "prune-a",
        ["runs", "prune", "--older-than", "0s", "--app", APP],
        _env(database_url, root, PAUSE_AFTER_PRUNED_PREFIX="3"),
    )
    await prune_a.wait_for_output("PAUSED prune", timeout=60)
    prune_a.send(signal.SIGKILL)
    assert await prune_a.wait_exit(5) == -signal.SIGKILL

    remaining = {row["id"] for row in await db.fetch("SELECT id FROM durableflow.runs")}
    gone = [run_id for run_id in run_ids if run_id not in remaining]
    assert len(gone) == 2 and queued in remaining
    # The third run: its artefacts are gone, its rows not yet.
    half = [
        run_id
        for run_id in run_ids
        if run_id in remaining and not (root / "executions" / str(run_id)).exists()
    ]
    assert len(half) == 1
    assert (
        await db.fetchval("SELECT count(*) FROM durableflow.lineage WHERE run_id = $1", half[0])
        == 3
    )

    second = await processes.run(
        ["runs", "prune", "--older-than", "0s", "--json", "--app", APP], env
    )
    assert second.returncode == 0, second
    counts = json.loads(second.stdout)
    assert counts["runs"] == 3 and counts["artefacts"] == 6  # the third run's were gone
    assert counts["rows"]["lineage"] == 9 and counts["rows"]["steps"] == 9
    assert {row["id"] for row in await db.fetch("SELECT id FROM durableflow.runs")} == {queued}
    assert await db.fetchval("SELECT count(*) FROM durableflow.lineage") == 0
    assert not (root / "executions").exists() or not any((root / "executions").iterdir())


async def test_a_prune_by_age_shows_its_progress_on_a_terminal_only(
    database_url: str, db: asyncpg.Connection, processes: Processes, tmp_path: Path
) -> None:
    root = tmp_path / "artefacts"
    flow = artefact_app.build_flow(database_url, str(root), ledger=False)
    sizes = (4, 3, 2)  # finished runs, in three windows of time: one prune each
    cutoffs = []
    async with flow:
        async with flow.worker(concurrency=4):
            for size in sizes:
                window = [
                    await flow.start(artefact_app.PIPELINE, input=f"https://x.test/{i}")
                    for i in range(size)
                ]
                for run_id in window:
                    await flow.result(run_id, timeout=30)
                cutoffs.append((await db.fetchval("SELECT durableflow.clock_now()")).isoformat())
        queued = await flow.start(artefact_app.PIPELINE, input="https://x.test/later")
    env = _env(database_url, root)
    prune = ["runs", "prune", "--app", APP, "--before"]

    async def remaining() -> int:
        return int(await db.fetchval("SELECT count(*) FROM durableflow.runs"))

    # At a terminal: a bar, drawn and redrawn, ending full; then the counts.
    shown = await processes.run_on_terminal([*prune, cutoffs[0]], env)
    assert shown.returncode == 0, shown
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.stdout)  # colours, cursor moves
    assert re.search(r"pruning .*━.* 4/4 runs, 12 artefacts", screen), screen
    assert "pruned 4 runs, 12 artefacts" in screen
    # The log lines (stderr, the same terminal) are printed above the bar, not through it.
    logged = [line for line in re.split(r"[\r\n]+", screen) if "pruned run " in line]
    assert len(logged) == 4 and all(re.match(r"\d{4}-\d\d-\d\d ", line) for line in logged), screen
    assert await remaining() == 3 + 2 + 1

    # Piped: the counts alone, one line.
    piped = await processes.run([*prune, cutoffs[1]], env)
    assert piped.returncode == 0, piped
    assert piped.stdout.splitlines() == [
        "pruned 3 runs, 9 artefacts (events 0, lineage 9, signals 0, step_attempts 0, steps 9)"
    ], piped.stdout
    assert await remaining() == 2 + 1

    # --json: the counts as JSON, nothing else on stdout.
    as_json = await processes.run([*prune, cutoffs[2], "--json"], env)
    assert as_json.returncode == 0, as_json
    counts = json.loads(as_json.stdout)
    assert (counts["runs"], counts["artefacts"], counts["skipped"]) == (2, 6, [])
    assert counts["rows"]["lineage"] == 6 and counts["rows"]["steps"] == 6

    assert [row["id"] for row in await db.fetch("SELECT id FROM durableflow.runs")] == [queued]
    assert await db.fetchval("SELECT count(*) FROM durableflow.lineage") == 0
    assert not (root / "executions").exists() or not any((root / "executions").iterdir())


async def test_a_200_mb_artefact_is_streamed_with_a_small_worker(
    database_url: str, db: asyncpg.Connection, processes: Processes, tmp_path: Path
) -> None:
    root = tmp_path / "artefacts"
    megabytes = 200
    client = artefact_app.build_flow(database_url, str(root))
    async with client:
        worker = processes.worker("worker", APP, _env(database_url, root))
        await worker.wait_for_output("worker_started", timeout=30)
        process = psutil.Process(worker.pid)
        idle_rss = process.memory_info().rss
        run_id = await client.start(artefact_app.BIG, input=megabytes, queue="default")
        peak, samples = idle_rss, 0
        deadline = time.monotonic() + 90
        while (await db.fetchval("SELECT status FROM durableflow.runs WHERE id = $1", run_id)) in (
            "queued",
            "running",
        ):
            peak = max(peak, process.memory_info().rss)
            samples += 1
            assert time.monotonic() < deadline, worker.describe()
            await asyncio.sleep(0.01)
        ref = await client.result(run_id, timeout=10)

    expected = hashlib.sha256()
    for _ in range(megabytes):
        expected.update(artefact_app.CHUNK)
    assert ref.size == megabytes * len(artefact_app.CHUNK)
    assert ref.sha256 == expected.hexdigest()
    assert (root / ref.key).stat().st_size == ref.size
    mib = 1024 * 1024
    print(
        f"worker RSS idle {idle_rss / mib:.0f} MiB, peak {peak / mib:.0f} MiB ({samples} samples)"
    )
    assert samples >= 5, "the write was too quick to watch the worker's memory"
    assert peak < 150 * mib, f"peak RSS {peak / mib:.0f} MiB"
