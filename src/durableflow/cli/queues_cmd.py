"""``durableflow queues list | configure``: queue limits and load.

- ``queues list``: every configured queue and every queue with work: its limits, runs
  queued and executing, and how long the oldest due run has waited;
- ``queues configure NAME [--concurrency N] [--worker-concurrency N]
  [--rate-limit N/SECONDS] [--priority-aging SECONDS]``: set the queue's limits. Like
  ``flow.configure_queue``, it replaces every limit: one not given is removed.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import asdict
from typing import Any

from durableflow.cli.common import (
    EXIT_OK,
    add_connection_options,
    console,
    format_seconds,
    listing_table,
    noun,
    open_flow,
    print_json,
    visible,
)
from durableflow.errors import ConfigurationError

_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
_UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}


def register(subparsers: Any) -> None:
    verbs = noun(subparsers, "queues", "queue limits (concurrency, rate) and their load")

    listing = verbs.add_parser(
        "list", help="queues with their limits, queued and executing runs, oldest wait"
    )
    add_connection_options(listing)
    listing.set_defaults(func=list_command)

    configure = verbs.add_parser(
        "configure",
        help="set a queue's limits (every limit not given is removed)",
        description="Set queue NAME's limits; every worker applies them at once. This "
        "replaces all of the queue's limits: a limit not given here is removed.",
    )
    configure.add_argument("name", metavar="NAME")
    configure.add_argument(
        "--concurrency", type=int, help="at most this many of its runs executing at once"
    )
    configure.add_argument(
        "--worker-concurrency", type=int, help="at most this many per worker process"
    )
    configure.add_argument(
        "--rate-limit",
        metavar="N/SECONDS",
        help="at most N runs started per window of SECONDS (100/60, or 100/1m)",
    )
    configure.add_argument(
        "--priority-aging",
        type=float,
        metavar="SECONDS",
        help="a queued run gains one priority level per SECONDS of waiting",
    )
    add_connection_options(configure)
    configure.set_defaults(func=configure_command)


def parse_rate_limit(text: str) -> tuple[int, float]:
    """``100/60`` (or ``100/1m``, ``5/0.5s``) as ``(100, 60.0)``."""
    match = _RATE.match(text)
    if match is None:
        raise ConfigurationError(
            f"--rate-limit {text!r}: give N/SECONDS, e.g. 100/60 or 100/1m", setting="rate_limit"
        )
    count, amount, unit = match.groups()
    return int(count), float(amount) * _UNIT_SECONDS[unit]


def _queue_json(queue: Any) -> dict[str, Any]:
    data = asdict(queue)
    rate = queue.rate_limit
    data["rate_limit"] = None if rate is None else {"count": rate[0], "seconds": rate[1]}
    return data


def _limit(value: int | None) -> str:
    return "-" if value is None else str(value)


def queues_table(queues: list[Any]) -> Any:
    from rich.text import Text

    table = listing_table(
        (
            "QUEUE",
            "CONCURRENCY",
            "PER WORKER",
            "RATE LIMIT",
            "AGING",
            "QUEUED",
            "EXECUTING",
            "OLDEST WAIT",
        )
    )
    for queue in queues:
        rate = queue.rate_limit
        table.add_row(
            Text(visible(queue.name)),
            _limit(queue.concurrency),
            _limit(queue.worker_concurrency),
            "-" if rate is None else f"{rate[0]} / {format_seconds(rate[1])}",
            "-" if queue.priority_aging is None else format_seconds(queue.priority_aging),
            str(queue.queued),
            str(queue.executing),
            format_seconds(queue.oldest_waiting_seconds),
        )
    return table


async def list_command(args: argparse.Namespace) -> int:
    async with open_flow(args) as flow:
        queues = await flow.list_queues()
    if args.json:
        print_json([_queue_json(queue) for queue in queues])
    else:
        console().print(queues_table(queues))
    return EXIT_OK


async def configure_command(args: argparse.Namespace) -> int:
    rate_limit = parse_rate_limit(args.rate_limit) if args.rate_limit else None
    async with open_flow(args) as flow:
        await flow.configure_queue(
            args.name,
            concurrency=args.concurrency,
            worker_concurrency=args.worker_concurrency,
            rate_limit=rate_limit,
            priority_aging=args.priority_aging,
        )
        [queue] = [queue for queue in await flow.list_queues() if queue.name == args.name]
    if args.json:
        print_json(_queue_json(queue))
    else:
        console().print(queues_table([queue]))
    return EXIT_OK
