"""``durableflow leader``: which worker leads the schema (fires schedules, cleans up).

Prints the leader's worker id, host and pid, its epoch (the fencing token of its
term) and since when it leads. Exit code 1 when no worker leads right now.
"""

from __future__ import annotations

import argparse
from typing import Any

from durableflow.cli.common import (
    EXIT_NO,
    EXIT_OK,
    add_connection_options,
    console,
    facts_grid,
    fail,
    format_seconds,
    format_time,
    open_flow,
    print_json,
    visible,
)


def register(subparsers: Any) -> None:
    leader = subparsers.add_parser(
        "leader",
        help="which worker leads the schema, its epoch and since when",
        description="The worker holding the leader lock of the schema (it fires schedule "
        "ticks and does the housekeeping), its epoch and since when; exit 1 if none.",
    )
    add_connection_options(leader)
    leader.set_defaults(func=leader_command)


async def leader_command(args: argparse.Namespace) -> int:
    async with open_flow(args) as flow:
        info = await flow.leader()
        workers = {worker.id: worker for worker in await flow.list_workers()} if info else {}
    if info is None:
        if args.json:
            print_json({"leader": None})
        else:
            fail("no worker leads this schema right now")
        return EXIT_NO
    worker = workers.get(info.worker_id)
    answer = {
        "leader": {
            "worker_id": info.worker_id,
            "epoch": info.epoch,
            "since": info.since,
            "host": worker.host if worker else None,
            "pid": worker.pid if worker else None,
            "heartbeat_age": worker.heartbeat_age if worker else None,
        }
    }
    if args.json:
        print_json(answer)
        return EXIT_OK

    from rich.text import Text

    rows: list[tuple[str, Any]] = [("leader", Text(visible(info.worker_id)))]
    if worker is not None:
        rows.append(("host", Text(visible(f"{worker.host} (pid {worker.pid})"))))
        rows.append(("heartbeat", f"{format_seconds(worker.heartbeat_age)} ago"))
    rows += [("epoch", str(info.epoch)), ("since", format_time(info.since))]
    console().print(facts_grid(rows))
    return EXIT_OK
