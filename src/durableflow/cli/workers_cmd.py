"""``durableflow workers list``: the registered workers and whether they are alive."""

from __future__ import annotations

import argparse
from typing import Any

from durableflow.cli.common import (
    EXIT_OK,
    add_connection_options,
    console,
    format_seconds,
    format_time,
    noun,
    open_flow,
    print_json,
    visible,
)


def register(subparsers: Any) -> None:
    verbs = noun(subparsers, "workers", "the worker processes and their heartbeats")
    listing = verbs.add_parser("list", help="registered workers, newest first")
    add_connection_options(listing)
    listing.set_defaults(func=list_command)


async def list_command(args: argparse.Namespace) -> int:
    async with open_flow(args) as flow:
        workers = await flow.list_workers()
    if args.json:
        print_json(workers)
        return EXIT_OK

    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "HOST", "PID", "QUEUES", "WORKFLOWS", "STARTED", "HEARTBEAT", "ALIVE"):
        table.add_column(column, no_wrap=column != "WORKFLOWS")
    for worker in workers:
        workflows = ", ".join(f"{w.get('name')} v{w.get('version')}" for w in worker.workflows)
        table.add_row(
            Text(visible(worker.id)),
            Text(visible(worker.host)),
            str(worker.pid),
            Text(visible(",".join(worker.queues))),
            Text(visible(workflows)),
            format_time(worker.started_at),
            f"{format_seconds(worker.heartbeat_age)} ago",
            "[green]yes[/]" if worker.alive else "[red]no[/]",
        )
    console().print(table)
    return EXIT_OK
