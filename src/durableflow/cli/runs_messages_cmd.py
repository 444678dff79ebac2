"""``durableflow runs signal | signals | events``: messages to and from runs.

- ``runs signal ID NAME [--payload JSON] [--idempotency-key KEY]``: put a signal in the
  run's mailbox (a waiting run receives it at once, a later wait finds it there);
- ``runs signals ID``: the run's mailbox, each signal pending or consumed;
- ``runs events ID``: the keys the run set with ``ctx.set_event``, latest values.

Exit codes: 1 when the run does not exist or (``signal``) has already finished, so
nothing would receive the signal; 2 for a bad argument (a payload that is not JSON).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from durableflow.cli.common import (
    EXIT_ERROR,
    EXIT_NO,
    EXIT_OK,
    add_connection_options,
    console,
    fail,
    format_time,
    listing_table,
    noun,
    open_flow,
    parse_json_argument,
    print_json,
    visible,
)
from durableflow.cli.runs_cmd import RUNS_HELP
from durableflow.errors import RunFinished, RunNotFound


def register(subparsers: Any) -> None:
    verbs = noun(subparsers, "runs", RUNS_HELP)

    signal = verbs.add_parser(
        "signal",
        help="send a signal to a run",
        description="Put signal NAME, with a JSON payload, in the run's mailbox: the run "
        "receives it with ctx.wait_for_signal(NAME), now or later, exactly once.",
    )
    signal.add_argument("run_id", metavar="ID")
    signal.add_argument("name", metavar="NAME")
    signal.add_argument(
        "--payload", metavar="JSON", help="the signal's payload, as JSON (default: null)"
    )
    signal.add_argument(
        "--idempotency-key", help="sending twice with the same key stores one signal"
    )
    add_connection_options(signal)
    signal.set_defaults(func=signal_command)

    signals = verbs.add_parser("signals", help="a run's signals, pending or consumed")
    signals.add_argument("run_id", metavar="ID")
    add_connection_options(signals)
    signals.set_defaults(func=signals_command)

    events = verbs.add_parser("events", help="the events a run set, with their latest values")
    events.add_argument("run_id", metavar="ID")
    add_connection_options(events)
    events.set_defaults(func=events_command)


async def signal_command(args: argparse.Namespace) -> int:
    payload = parse_json_argument(args.payload, "--payload") if args.payload is not None else None
    async with open_flow(args) as flow:
        try:
            await flow.send_signal(
                args.run_id, args.name, payload, idempotency_key=args.idempotency_key
            )
        except (RunNotFound, RunFinished) as exc:
            fail(str(exc))
            return EXIT_NO
        except ValueError as exc:  # a signal name the API refuses
            fail(str(exc))
            return EXIT_ERROR
    if args.json:
        print_json({"run_id": args.run_id, "signal": args.name, "sent": True})
    else:
        print(f"signal {args.name!r} sent to run {args.run_id}")
    return EXIT_OK


async def _read(args: argparse.Namespace, read: Any) -> Any:
    """``read(flow)`` for the run of ``args``; None (after one line on stderr) if unknown."""
    async with open_flow(args) as flow:
        try:
            return await read(flow)
        except RunNotFound as exc:
            fail(str(exc))
            return None


async def signals_command(args: argparse.Namespace) -> int:
    signals = await _read(args, lambda flow: flow.signals(args.run_id))
    if signals is None:
        return EXIT_NO
    if args.json:
        print_json([{**asdict(signal), "state": signal.state} for signal in signals])
        return EXIT_OK
    from rich.text import Text

    from durableflow.admin.core_sections import value_text

    table = listing_table(
        ("#", "NAME", "STATE", "SENT", "CONSUMED BY", "KEY", "PAYLOAD"), wrap=("PAYLOAD",)
    )
    for signal in signals:
        table.add_row(
            str(signal.id),
            Text(visible(signal.name)),
            "[yellow]pending[/]" if signal.state == "pending" else "consumed",
            format_time(signal.sent_at),
            "-" if signal.consumed_by_step is None else f"step #{signal.consumed_by_step}",
            Text(visible(signal.idempotency_key or "-")),
            Text(visible(value_text(signal.payload))),
        )
    console().print(table)
    return EXIT_OK


async def events_command(args: argparse.Namespace) -> int:
    events = await _read(args, lambda flow: flow.get_events(args.run_id))
    if events is None:
        return EXIT_NO
    if args.json:
        print_json(events)
        return EXIT_OK
    from rich.text import Text

    from durableflow.admin.core_sections import value_text

    table = listing_table(("KEY", "LATEST VALUE"), wrap=("LATEST VALUE",))
    for key, value in events.items():
        table.add_row(Text(visible(key)), Text(visible(value_text(value))))
    console().print(table)
    return EXIT_OK
