"""The operator CLI (``durableflow runs ... / workers list``) over real worker processes.

Every command runs as its own process against the test's database, with ``--json``
output parsed here; the blocked-run test changes a worker's code without a version
bump, then restores it and unblocks the run with ``runs resume`` (and another with
``runs resume --force``); the dead-run test kills the workers of a run until it is
``dead``, then resumes it.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import uuid
from datetime import datetime
from pathlib import Path

import asyncpg
import pytest
from apps.harness import wait_until
from apps.ops_cli import APP, Cli

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]


async def succeeded(db: asyncpg.Connection, run_id: str) -> None:
    """Wait (up to 30 s) until the run has succeeded."""
    await wait_until(
        "SELECT status = 'succeeded' FROM durableflow.runs WHERE id = $1",
        db,
        uuid.UUID(run_id),
        timeout=30,
    )


async def test_start_list_show_steps_and_workers(cli: Cli, db: asyncpg.Connection) -> None:
    worker = cli.worker("worker")
    await worker.wait_for_output("running", timeout=30, stream="stdout")

    started = await cli.json("runs", "start", "ops.greet", "-a", APP, "--input", '"bob"', "--wait")
    assert started["status"] == "succeeded" and started["output"] == "hello bob"
    run_id = started["run_id"]

    listing, shown, steps, workers, text = await asyncio.gather(
        cli.json("runs", "list", "--workflow", "ops.greet", "--status", "succeeded"),
        cli.json("runs", "show", run_id),
        cli.json("runs", "steps", run_id),
        cli.json("workers", "list"),
        cli.run("runs", "show", run_id),
    )
    assert [run["id"] for run in listing["runs"]] == [run_id]
    assert listing["next_cursor"] is None
    # Paging: a second run, then one run a page, the cursor passed back.
    second = await cli.json("runs", "start", "ops.greet", "-a", APP, "--input", '"ann"', "--wait")
    page_one = await cli.json("runs", "list", "--workflow", "ops.greet", "--limit", "1")
    assert [run["id"] for run in page_one["runs"]] == [second["run_id"]]  # newest first
    page_two = await cli.json(
        "runs",
        "list",
        "--workflow",
        "ops.greet",
        "--limit",
        "1",
        "--cursor",
        page_one["next_cursor"],
    )
    assert [run["id"] for run in page_two["runs"]] == [run_id]
    assert page_two["next_cursor"] is None
    assert shown["run"]["status"] == "succeeded"
    assert shown["run"]["input"] == "bob" and shown["run"]["output"] == "hello bob"
    assert shown["run"]["finished_at"] and shown["run"]["duration"] is not None
    assert [(s["name"], s["attempt"], s["output"]) for s in steps] == [
        ("greet_step", 1, "hello bob")
    ]
    assert steps[0]["duration"] is not None and steps[0]["failed_attempts"] == []
    assert shown["steps"] == steps
    [alive] = [w for w in workers if w["alive"]]
    assert alive["pid"] == worker.pid
    assert {"ops.greet", "ops.evolving"} <= {w["name"] for w in alive["workflows"]}
    assert text.returncode == 0, text
    for expected in (run_id, "succeeded", "ops.greet v1", "greet_step", '"hello bob"'):
        assert expected in text.stdout, (expected, text.stdout)

    missing = await cli.run("runs", "show", str(uuid.uuid4()))
    assert missing.returncode == 1 and "no run with id" in missing.stderr, missing
    for verb in (["fork", "--from-step", "0"], ["replay", "--from-stage", "a"], ["watch"]):
        unknown = await cli.run("runs", verb[0], str(uuid.uuid4()), *verb[1:])
        assert unknown.returncode == 1 and "no run with id" in unknown.stderr, unknown
    bad = await cli.run("runs", "list", "--status", "finished")
    assert bad.returncode == 2 and "unknown run status" in bad.stderr, bad
    assert (await cli.run("runs", "delete", run_id)).returncode == 2  # --yes is required
    deleted = await cli.json("runs", "delete", run_id, "--yes")
    assert deleted == [{"run_id": run_id, "ok": True, "message": "deleted"}]
    assert (
        await db.fetchval("SELECT count(*) FROM durableflow.runs WHERE id = $1", uuid.UUID(run_id))
        == 0
    )

    worker.send(signal.SIGTERM)
    assert await worker.wait_exit(20) == 0, worker.describe()


async def test_failed_run_shows_its_traceback_and_resumes(
    cli: Cli, tmp_path: Path, db: asyncpg.Connection
) -> None:
    (tmp_path / "broken").touch()
    worker = cli.worker("worker")
    started = await cli.json(
        "runs", "start", "ops.flaky", "-a", APP, "--input", "21", "--wait", expect=1
    )
    assert started["status"] == "failed"
    run_id = started["run_id"]
    text = await cli.run("runs", "show", run_id)
    assert text.returncode == 0, text
    assert "flaky is broken for 21" in text.stdout and "Traceback" in text.stdout

    (tmp_path / "broken").unlink()
    resumed = await cli.json("runs", "resume", run_id)
    assert resumed == [{"run_id": run_id, "ok": True, "message": "queued again"}]
    await succeeded(db, run_id)
    shown = await cli.json("runs", "show", run_id)
    assert shown["run"]["output"] == 42
    [step] = shown["steps"]
    assert step["error"] is None and [a["attempt"] for a in step["failed_attempts"]] == [1]
    assert "flaky is broken" in step["failed_attempts"][0]["error"]["message"]
    again = await cli.json("runs", "resume", run_id, expect=1)
    assert again[0]["ok"] is False and "succeeded" in again[0]["message"]
    worker.kill()


async def test_cancel_resume_and_watch(cli: Cli, db: asyncpg.Connection) -> None:
    queued = (await cli.json("runs", "start", "ops.greet", "-a", APP, "--input", '"ann"'))["run_id"]
    watch = cli.processes.start(
        "watch",
        ["runs", "list", "--watch", "--json", "--interval", "0.2", "--workflow", "ops.greet"],
        cli.env,
    )
    cancelled = await cli.json("runs", "cancel", queued, str(uuid.uuid4()), expect=1)
    assert cancelled[0] == {"run_id": queued, "ok": True, "message": "cancelled"}
    assert cancelled[1]["ok"] is False and "no run with id" in cancelled[1]["message"]
    again = await cli.json("runs", "cancel", queued, expect=1)
    assert "already cancelled" in again[0]["message"]

    await cli.json("runs", "resume", queued)
    worker = cli.worker("worker")
    await succeeded(db, queued)
    # The watcher printed one JSON line per change: queued, cancelled, queued, succeeded.
    await watch.wait_for_output('"status": "succeeded"', timeout=20, stream="stdout")
    statuses = [json.loads(line)["runs"][0]["status"] for line in watch.stdout().splitlines()]
    assert statuses[0] in ("queued", "cancelled") and statuses[-1] == "succeeded"
    assert "cancelled" in statuses or len(statuses) >= 2
    watch.kill()
    worker.kill()


async def test_watch_on_a_terminal_redraws_in_place_until_ctrl_c(
    cli: Cli, db: asyncpg.Connection
) -> None:
    """``runs list --watch`` typed at a terminal: the table follows a run started
    meanwhile, redrawn in place; Ctrl-C on the terminal ends it (130, docs/cli.md) with
    the cursor shown again, the terminal's modes as they were and no traceback."""
    terminal = cli.processes.start_on_terminal(
        ["runs", "list", "--watch", "--interval", "0.2", "--workflow", "ops.greet"], cli.env
    )
    modes = terminal.attributes()
    await terminal.wait_for("WORKFLOW", timeout=30)  # the (empty) table is drawn
    run_id = (await cli.json("runs", "start", "ops.greet", "-a", APP, "--input", '"tty"'))["run_id"]
    await terminal.wait_for(run_id, timeout=20)
    [row] = [line for line in re.split(r"[\r\n]+", terminal.screen()) if run_id in line]
    assert row.split()[1:4] == ["ops.greet", "v1", "queued"], row
    worker = cli.worker("worker")
    await succeeded(db, run_id)
    await terminal.wait_for("succeeded", timeout=20)
    # In place: each redraw moves the cursor back up over the previous table.
    assert re.search(r"\x1b\[\d*A", terminal.received()), terminal.received()

    terminal.press(b"\x03")  # Ctrl-C: SIGINT to the terminal's foreground process
    assert await terminal.wait_exit(20) == 130, terminal.screen()
    shown, screen = terminal.received(), terminal.screen()
    assert "Traceback" not in screen and "KeyboardInterrupt" not in screen, screen
    assert shown.rfind("\x1b[?25h") > shown.rfind("\x1b[?25l") >= 0, shown  # cursor back
    assert screen.endswith("\n"), screen  # the prompt comes back on a line of its own
    rows = [line for line in re.split(r"[\r\n]+", screen) if run_id in line]
    assert "succeeded" in rows[-1], rows  # the last table stays on the screen
    assert terminal.attributes() == modes
    worker.kill()


async def test_a_blocked_run_is_unblocked_by_resume_after_restoring_the_code_or_by_force(
    cli: Cli, tmp_path: Path, db: asyncpg.Connection
) -> None:
    old = cli.worker("old")
    run_id, forced_id = [
        (await cli.json("runs", "start", "ops.evolving", "-a", APP, "--input", str(n)))["run_id"]
        for n in (1, 10)
    ]
    await wait_until(
        "SELECT count(*) = 2 FROM durableflow.steps WHERE run_id = any($1::uuid[])",
        db,
        [uuid.UUID(run_id), uuid.UUID(forced_id)],
        timeout=30,
        message="the old worker committed each run's first step and waits at the gate",
    )
    old.kill()  # the old code goes away mid-run...
    new = cli.worker("new", OPS_APP_CODE="new")  # ...and changed code, same version, arrives
    await wait_until(
        "SELECT bool_and(status = 'blocked') FROM durableflow.runs WHERE id = any($1::uuid[])",
        db,
        [uuid.UUID(run_id), uuid.UUID(forced_id)],
        timeout=30,
    )
    blocked = await cli.json("runs", "list", "--status", "blocked")
    assert {run["id"] for run in blocked["runs"]} == {run_id, forced_id}
    assert {run["error_type"] for run in blocked["runs"]} == {"CodeChanged"}
    refused = await cli.json("runs", "resume", run_id, forced_id, expect=1)
    assert [r["ok"] for r in refused] == [False, False]
    assert "no live worker" in refused[0]["message"]

    # --force: the new code, the only code running, continues the second run.
    (tmp_path / "open").touch()
    forced = await cli.json("runs", "resume", forced_id, "--force")
    assert forced == [{"run_id": forced_id, "ok": True, "message": "queued again"}]
    await succeeded(db, forced_id)
    assert (await cli.json("runs", "show", forced_id))["run"]["output"] == 1011  # new code's
    assert (
        await db.fetchval("SELECT status FROM durableflow.runs WHERE id = $1", uuid.UUID(run_id))
    ) == "blocked"

    new.send(signal.SIGTERM)  # restore the old code
    assert await new.wait_exit(20) == 0, new.describe()
    restored = cli.worker("restored")
    await restored.wait_for_output("running", timeout=30, stream="stdout")
    resumed = await cli.json("runs", "resume", run_id)
    assert resumed[0]["ok"] is True
    await succeeded(db, run_id)
    shown = await cli.json("runs", "show", run_id)
    assert shown["run"]["output"] == 2  # the old code's answer: no +1000
    restored.kill()


async def test_a_waiting_run_is_shown_signalled_and_finishes(
    cli: Cli, db: asyncpg.Connection
) -> None:
    worker = cli.worker("worker")
    started = await cli.json(
        "runs", "start", "ops.approval", "-a", APP, "--input", '"order-7"', "--deadline", "600"
    )
    run_id = started["run_id"]
    await wait_until(
        "SELECT status = 'waiting' AND waiting_for = '{signal:approve}' "
        "FROM durableflow.runs WHERE id = $1",
        db,
        uuid.UUID(run_id),
        timeout=30,
        message="the run parks, waiting for its signal",
    )
    waiting, shown, text, bad_json, missing = await asyncio.gather(
        cli.json("runs", "list", "--status", "waiting"),
        cli.json("runs", "show", run_id),
        cli.run("runs", "show", run_id),
        cli.run("runs", "signal", run_id, "approve", "--payload", "{not json"),
        cli.run("runs", "signal", str(uuid.uuid4()), "approve"),
    )
    assert [run["id"] for run in waiting["runs"]] == [run_id]
    run, sections = shown["run"], shown["sections"]
    assert run["status"] == "waiting" and run["waiting_for"] == ["signal:approve"]
    assert run["deadline"] is not None and run["wakes_at"] == run["deadline"]
    assert sections["waiting"]["rows"] == [["signal", "approve", ""]]
    assert "deadline" in sections["waiting"]["caption"]
    [child] = sections["children"]["rows"]
    child_id = child[0]
    assert child[1:3] == ["ops.greet v1", "succeeded"]
    assert sections["events"]["rows"] == [
        ["stage", '{"order": "order-7", "stage": "awaiting approval"}']
    ]
    assert "signals" not in sections  # nothing sent yet
    assert text.returncode == 0, text
    for expected in ("waiting for", "signal:approve", "deadline", "Children", child_id, "Events"):
        assert expected in text.stdout, (expected, text.stdout)
    assert bad_json.returncode == 2 and "--payload is not valid JSON" in bad_json.stderr, bad_json
    assert missing.returncode == 1 and "no run with id" in missing.stderr, missing
    children = await cli.json("runs", "list", "--parent", run_id)
    assert [c["id"] for c in children["runs"]] == [child_id]

    payload = '{"by": "<b>ops</b>", "ok": true}'
    sent = await cli.json(
        "runs", "signal", run_id, "approve", "--payload", payload, "--idempotency-key", "k1"
    )
    assert sent == {"run_id": run_id, "signal": "approve", "sent": True}
    await succeeded(db, run_id)
    signals, events, shown, late = await asyncio.gather(
        cli.json("runs", "signals", run_id),
        cli.json("runs", "events", run_id),
        cli.json("runs", "show", run_id),
        cli.run("runs", "signal", run_id, "approve"),
    )
    [signal] = signals
    assert signal["name"] == "approve" and signal["state"] == "consumed"
    assert signal["payload"] == {"by": "<b>ops</b>", "ok": True}
    assert signal["idempotency_key"] == "k1" and signal["consumed_by_step"] is not None
    assert events == {"stage": {"order": "order-7", "stage": "awaiting approval"}}
    assert shown["run"]["output"] == {
        "greeting": "hello order-7",
        "decision": {"by": "<b>ops</b>", "ok": True},
    }
    assert "waiting" not in shown["sections"]
    assert shown["sections"]["signals"]["rows"][0][1:3] == ["approve", "consumed"]
    assert late.returncode == 1 and "already succeeded" in late.stderr, late
    worker.kill()


async def test_queues_schedules_and_the_leader(cli: Cli, db: asyncpg.Connection) -> None:
    worker = cli.worker("worker")
    await wait_until(
        "SELECT count(*) = 1 FROM durableflow.schedules WHERE name = 'ops.nightly'",
        db,
        timeout=30,
        message="the leader saves the declared schedule",
    )
    limits = ["--concurrency", "3", "--worker-concurrency", "2", "--rate-limit", "10/1m"]
    configured, bad_rate, leader, workers, schedules, shown, *texts = await asyncio.gather(
        cli.json("queues", "configure", "emails", *limits, "--priority-aging", "30"),
        cli.run("queues", "configure", "emails", "--rate-limit", "ten"),
        cli.json("leader"),
        cli.json("workers", "list"),
        cli.json("schedules", "list"),
        cli.json("schedules", "show", "ops.nightly"),
        cli.run("leader"),
        cli.run("workers", "list"),
        cli.run("schedules", "list"),
    )
    assert configured["name"] == "emails" and configured["concurrency"] == 3
    assert configured["worker_concurrency"] == 2 and configured["priority_aging"] == 30.0
    assert configured["rate_limit"] == {"count": 10, "seconds": 60.0}
    assert bad_rate.returncode == 2 and "--rate-limit" in bad_rate.stderr, bad_rate
    [alive] = [w for w in workers if w["alive"]]
    assert leader["leader"]["worker_id"] == alive["id"]
    assert leader["leader"]["pid"] == worker.pid and leader["leader"]["epoch"] >= 1
    [nightly] = schedules
    assert (nightly["name"], nightly["cron"], nightly["paused"]) == (
        "ops.nightly",
        "0 3 * * *",
        False,
    )
    assert nightly["next_tick"] is not None
    assert shown == nightly and shown["declared"] is True and shown["timezone"] == "UTC"
    leader_text, workers_text, schedules_text = texts
    assert leader_text.returncode == 0, leader_text
    facts = dict(line.strip().split(None, 1) for line in leader_text.stdout.splitlines())
    assert facts["leader"] == alive["id"] and facts["epoch"] == str(leader["leader"]["epoch"])
    assert f"(pid {worker.pid})" in facts["host"]
    [row] = [line for line in workers_text.stdout.splitlines() if line.startswith(alive["id"])]
    assert str(worker.pid) in row.split() and row.split()[-1] == "yes", workers_text.stdout
    [row] = [line for line in schedules_text.stdout.splitlines() if line.startswith("ops.nightly")]
    assert "0 3 * * *" in row and "active" in row, schedules_text.stdout

    queues, paused, text = await asyncio.gather(
        cli.json("queues", "list"),
        cli.json("schedules", "pause", "ops.nightly"),
        cli.run("queues", "list"),
    )
    [emails] = [q for q in queues if q["name"] == "emails"]
    assert (emails["concurrency"], emails["worker_concurrency"]) == (3, 2)
    assert emails["queued"] == 0 and emails["executing"] == 0
    assert "emails" in text.stdout and "10 / 1m00s" in text.stdout, text
    assert paused["paused"] is True and paused["next_tick"] is None

    resumed, triggered, backfilled, earlier, unknown, replaced = await asyncio.gather(
        cli.json("schedules", "resume", "ops.nightly"),
        cli.json("schedules", "trigger", "ops.nightly"),
        cli.json("schedules", "backfill", "ops.nightly", "--start", "3d"),
        cli.json("schedules", "backfill", "ops.nightly", "--start", "5d", "--end", "3d"),
        cli.run("schedules", "pause", "no.such.schedule"),
        cli.json("queues", "configure", "emails", "--priority-aging", "60"),
    )
    assert resumed["paused"] is False and resumed["next_tick"] is not None
    assert len(backfilled["runs"]) == 3  # one 03:00 tick a day in the last three days
    assert len(earlier["runs"]) == 2  # [5 days ago, 3 days ago): two ticks, none of those
    assert not set(earlier["runs"]) & set(backfilled["runs"])
    # configure replaces every limit: those not given are gone.
    assert (replaced["concurrency"], replaced["worker_concurrency"]) == (None, None)
    assert (replaced["rate_limit"], replaced["priority_aging"]) == (None, 60.0)
    assert unknown.returncode == 1 and "no schedule named" in unknown.stderr, unknown
    await wait_until(
        "SELECT count(*) = 6 FROM durableflow.runs "
        "WHERE workflow = 'ops.nightly' AND status = 'succeeded'",
        db,
        timeout=30,
        message="the worker runs the triggered and backfilled ticks",
    )
    again = await cli.json("schedules", "backfill", "ops.nightly", "--start", "3d")
    assert again["runs"] == []  # those ticks have their runs already
    assert triggered["run_id"] not in backfilled["runs"]

    assert (await cli.run("schedules", "delete", "ops.nightly")).returncode == 2  # --yes
    deleted = await cli.json("schedules", "delete", "ops.nightly", "--yes")
    assert deleted == {"schedule": "ops.nightly", "deleted": True}
    gone = await cli.run("schedules", "show", "ops.nightly")
    assert gone.returncode == 1, gone

    worker.send(signal.SIGTERM)
    assert await worker.wait_exit(20) == 0, worker.describe()
    nobody = await cli.run("leader", "--json")
    assert nobody.returncode == 1 and json.loads(nobody.stdout) == {"leader": None}


async def test_start_options_and_the_list_filters(
    cli: Cli, database_url: str, db: asyncpg.Connection
) -> None:
    # Queued runs (no worker yet), each started with the options that describe it.
    tagged = await cli.json(
        "runs", "start", "ops.greet", "-a", APP, "--input", '"a"',
        "--queue", "emails", "--correlation-id", "order-1", "--priority", "5",
    )  # fmt: skip
    delayed = await cli.json(
        "runs", "start", "ops.greet", "-a", APP, "--input", '"c"', "--delay", "3600"
    )
    keyed = await cli.run(
        "runs", "start", "ops.greet", "-a", APP, "--input", '"b"', "--idempotency-key", "k1"
    )
    assert keyed.returncode == 0, keyed
    keyed_id = keyed.stdout.strip()  # without --json: the id alone
    again, conflict = await asyncio.gather(
        cli.json(
            "runs", "start", "ops.greet", "-a", APP, "--input", '"b"', "--idempotency-key", "k1"
        ),
        cli.run(
            "runs", "start", "ops.greet", "-a", APP, "--input", '"x"', "--idempotency-key", "k1"
        ),
    )
    assert again["run_id"] == keyed_id  # the same key and input return the same run
    assert conflict.returncode == 2 and keyed_id in conflict.stderr, conflict  # another input
    given_up = await cli.run(
        "runs", "start", "ops.greet", "-a", APP, "--input", '"d"', "--wait", "--timeout", "0.5"
    )
    assert given_up.returncode == 2, given_up  # no worker yet: waiting gave up, the run goes on
    tagged, delayed = tagged["run_id"], delayed["run_id"]

    shown_tagged, shown_delayed = await asyncio.gather(
        cli.json("runs", "show", tagged), cli.json("runs", "show", delayed)
    )
    run = shown_tagged["run"]
    assert (run["queue"], run["priority"], run["correlation_id"]) == ("emails", 5, "order-1")
    run = shown_delayed["run"]
    assert run["status"] == "waiting" and run["waiting_for"] == []  # due in an hour
    due_in = datetime.fromisoformat(run["wakes_at"]) - datetime.fromisoformat(run["created_at"])
    assert 3590 < due_in.total_seconds() < 3610

    worker = cli.worker("worker")  # serves "default": the keyed and the last run finish
    await wait_until(
        "SELECT count(*) = 2 FROM durableflow.runs WHERE status = 'succeeded'", db, timeout=30
    )
    (
        newest,
        oldest,
        emails,
        order,
        finished,
        unfinished,
        recent,
        before,
        tomorrow,
    ) = await asyncio.gather(
        cli.json("runs", "list"),
        cli.json("runs", "list", "--oldest-first"),
        cli.json("runs", "list", "--queue", "emails"),
        cli.json("runs", "list", "--correlation-id", "order-1"),
        cli.json("runs", "list", "--status", "succeeded"),
        cli.json("runs", "list", "--status", "queued,running", "--status", "waiting"),
        cli.json("runs", "list", "--since", "1h"),
        cli.json("runs", "list", "--until", "1h"),
        cli.json("runs", "list", "--since", "2999-01-01T00:00:00+00:00"),
    )
    everything = [r["id"] for r in newest["runs"]]
    assert len(everything) == 4 and everything[1:] == [keyed_id, delayed, tagged]
    assert [r["id"] for r in oldest["runs"]] == everything[::-1]
    assert [r["id"] for r in emails["runs"]] == [tagged]
    assert [r["id"] for r in order["runs"]] == [tagged]
    assert {r["id"] for r in finished["runs"]} == {keyed_id, everything[0]}
    assert f"run {everything[0]} did not reach a final status" in given_up.stderr  # named
    assert [r["id"] for r in unfinished["runs"]] == [delayed, tagged]
    assert [r["id"] for r in recent["runs"]] == everything
    assert before["runs"] == [] and tomorrow["runs"] == []

    table = await cli.run("runs", "list", "--status", "queued,waiting", "--oldest-first")
    assert table.returncode == 0, table
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "WORKFLOW", "STATUS", "QUEUE", "CREATED", "DURATION", "ERROR"]
    assert [line.split()[0] for line in lines[1:]] == [tagged, delayed]
    assert "ops.greet v1" in lines[1] and "emails" in lines[1]

    cancelled = await cli.json("runs", "cancel", delayed, "--reason", "no longer needed")
    assert cancelled[0]["ok"] is True
    shown = await cli.json("runs", "show", delayed)
    assert shown["run"]["status"] == "cancelled"
    assert "no longer needed" in shown["run"]["error"]["message"]

    # --dsn and --schema name the database on their own, with no environment.
    explicit = await cli.processes.run(
        ["runs", "list", "--dsn", database_url, "--schema", "durableflow", "--json"], {}
    )
    assert explicit.returncode == 0, explicit
    assert [r["id"] for r in json.loads(explicit.stdout)["runs"]] == everything
    wrong = await cli.processes.run(["runs", "list", "--dsn", database_url, "--schema", "nope"], {})
    assert wrong.returncode == 2 and wrong.stderr.strip(), wrong
    worker.kill()


OWNER_PID = """
SELECT w.pid FROM durableflow.runs AS r JOIN durableflow.workers AS w ON w.id = r.owner
WHERE r.id = $1 AND r.status = 'running'
"""


async def test_a_run_whose_workers_died_is_dead_until_resumed_with_its_recoveries_reset(
    cli: Cli, ledger_url: str, tmp_path: Path, db: asyncpg.Connection
) -> None:
    """``ops.fragile`` (max_recoveries=1) dies with two workers; resumed, it survives one more."""
    workers = {}
    for name in ("w1", "w2"):
        worker = cli.worker(name)
        workers[worker.pid] = worker
    run_id = (await cli.json("runs", "start", "ops.fragile", "-a", APP, "--input", "1"))["run_id"]
    run_uuid = uuid.UUID(run_id)
    await wait_until(
        "SELECT count(*) = 1 FROM durableflow.steps WHERE run_id = $1",
        db,
        run_uuid,
        timeout=30,
        message="a worker committed the counted step and waits at the gate",
    )
    first_pid = await db.fetchval(OWNER_PID, run_uuid)

    async def kill_its_worker(spare: str) -> None:
        """SIGKILL the worker running the run, with a spare ready to take it over."""
        worker = workers.pop(await db.fetchval(OWNER_PID, run_uuid))
        worker.kill()
        replacement = cli.worker(spare)
        workers[replacement.pid] = replacement

    await kill_its_worker("w3")
    await wait_until(
        f"SELECT recoveries = 1 AND EXISTS ({OWNER_PID}) FROM durableflow.runs WHERE id = $1",
        db,
        run_uuid,
        timeout=30,
        message="another worker takes the run over: its first recovery",
    )
    await kill_its_worker("w4")
    await wait_until(
        "SELECT status = 'dead' FROM durableflow.runs WHERE id = $1",
        db,
        run_uuid,
        timeout=30,
        message="recovered a second time, past max_recoveries=1: dead",
    )
    dead, text = await asyncio.gather(
        cli.json("runs", "list", "--status", "dead"), cli.run("runs", "show", run_id)
    )
    assert [run["id"] for run in dead["runs"]] == [run_id]
    assert "max_recoveries=1" in dead["runs"][0]["error_message"]
    assert text.returncode == 0 and "dead" in text.stdout, text

    resumed = await cli.json("runs", "resume", run_id)
    assert resumed == [{"run_id": run_id, "ok": True, "message": "queued again"}]
    await wait_until(
        f"SELECT EXISTS ({OWNER_PID})", db, run_uuid, timeout=30, message="a worker claims it"
    )
    # Its worker dies once more: a first recovery again, not a third, so it goes on.
    await kill_its_worker("w5")
    (tmp_path / "open").touch()
    await wait_until(
        "SELECT status IN ('succeeded', 'dead') FROM durableflow.runs WHERE id = $1",
        db,
        run_uuid,
        timeout=30,
    )
    shown, steps = await asyncio.gather(
        cli.json("runs", "show", run_id), cli.run("runs", "steps", run_id)
    )
    assert shown["run"]["status"] == "succeeded", shown["run"]["error"]
    assert shown["run"]["output"] == 2
    assert [(s["name"], s["attempt"]) for s in shown["steps"]] == [("counted", 1), ("gate", 1)]
    rows = [line.split() for line in steps.stdout.splitlines()[1:]]  # the table, as text
    assert [row[:2] for row in rows] == [["0", "counted"], ["1", "gate"]], steps.stdout
    # The independent ledger: the counted step's body ran once, in the first worker.
    executions = await db.fetch(
        "SELECT step_id, pid FROM public.ledger WHERE run_id = $1", run_uuid
    )
    assert [(row["step_id"], row["pid"]) for row in executions] == [(0, first_pid)]
    for worker in workers.values():
        worker.kill()
