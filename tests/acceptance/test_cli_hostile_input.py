"""The CLI given hostile input, or printing hostile stored values: one line and exit 2
for what it cannot use (never a traceback), and escape sequences shown, not obeyed."""

from __future__ import annotations

import socket
import uuid

import asyncpg
import pytest
from apps.harness import Completed, wait_until
from apps.ops_cli import Cli

from durableflow import Flow

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(120)]

APP = "apps.hostile_app:flow"


def refused(result: Completed, reason: str) -> None:
    """Exit 2 with one line on stderr saying ``reason``, and no traceback."""
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], result.stderr


async def test_input_the_cli_cannot_use_is_one_line_and_exit_2(cli: Cli) -> None:
    run_id = str(uuid.uuid4())
    deep = "[" * 50_000  # past the JSON parser's recursion limit
    refused(await cli.run("runs", "signal", run_id, "go", "--payload", deep), "nested too deeply")
    refused(await cli.run("runs", "list", "--since", "99999999999d"), "before year 1")
    refused(await cli.run("runs", "prune", "--older-than", "99999999w"), "before year 1")
    refused(await cli.run("lineage", "k\udcff"), "not valid UTF-8")  # argv bytes k\xff

    for url, reason in [
        ("postgresql://[::1", "Invalid IPv6 URL"),
        ("postgresql://app@db:99999/app", "port '99999'"),
        ("postgresql://app@db:abc/app", "port 'abc'"),
    ]:
        refused(await cli.run("runs", "list", "--dsn", url), reason)
    bad_url = {**cli.env, "DURABLEFLOW_DATABASE_URL": "postgresql://app@db:99999/app"}
    refused(await cli.processes.run(["worker", APP], bad_url), "malformed URL")

    for port in ("99999", "-1"):  # argparse's usage, then its one error line
        result = await cli.run("ui", "--port", port)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result
        assert "is not a port number from 0 to 65535" in result.stderr.splitlines()[-1]
    refused(await cli.run("ui", "--host", "not..a..host"), "cannot serve the UI on")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        refused(await cli.run("ui", "--port", busy), "cannot serve the UI on 127.0.0.1")


async def test_stored_escape_sequences_are_shown_not_sent_to_the_terminal(
    cli: Cli, db: asyncpg.Connection, database_url: str
) -> None:
    worker = cli.processes.worker("worker", APP, cli.env)
    await worker.wait_for_output("running", timeout=30, stream="stdout")
    started = await cli.json("runs", "start", "hostile.fails", "-a", APP, "--input", "7")
    run_id = started["run_id"]
    await wait_until(
        "SELECT status = 'failed' FROM durableflow.runs WHERE id = $1",
        db,
        uuid.UUID(run_id),
        timeout=30,
    )
    for command in (["runs", "show", run_id], ["runs", "steps", run_id]):
        result = await cli.run(*command)
        assert result.returncode == 0, result
        assert "\x1b" not in result.stdout and "\x9b" not in result.stdout, command
        assert "\\x1b]0;pwned\\x07 \\x1b[2J \\x9b31m" in result.stdout, command
        assert "explode\\x1b[41m" in result.stdout, command
    shown = await cli.run("runs", "show", run_id)
    assert "Traceback (most recent call last)" in shown.stdout  # the traceback is printed too
    # --json keeps the values as they are (JSON escapes them itself).
    steps = await cli.json("runs", "steps", run_id)
    assert steps[0]["name"] == "explode\x1b[41m"
    # '²' is a digit to str.isdigit(), not to int(): a step name, and there is none such.
    refused(await cli.run("runs", "fork", run_id, "--from-step", "²"), "no step or state named")
    watched = await cli.run("runs", "watch", run_id)
    assert watched.returncode == 0 and "\x1b" not in watched.stdout, watched
    assert "explode\\x1b[41m" in watched.stdout

    # A published graph's name is printed as text, never read as rich markup.
    client = Flow(database_url=database_url)

    @client.action("note")
    async def note(ctx: object, payload: object) -> object:
        return payload

    async with client:
        await client.publish_graph(
            {
                "name": "pub[/]x",
                "version": 1,
                "initial": "a",
                "states": [
                    {"name": "a", "action": "note"},
                    {"name": "b", "action": "note", "terminal": True},
                ],
                "transitions": [{"from": "a", "to": "b"}],
            }
        )
    listed = await cli.run("graph", "list")
    assert listed.returncode == 0 and "pub[/]x" in listed.stdout, listed
