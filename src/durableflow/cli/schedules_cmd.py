"""``durableflow schedules list | show | pause | resume | trigger | delete | backfill``.

Schedules are fired by the leader (see ``durableflow leader``); these commands read
and change their definitions, and start runs on an operator's request:

- ``trigger NAME``: one run now, as if a tick fell now (paused or not);
- ``backfill NAME --start T [--end T]``: one run per tick in ``[start, end)`` whose run
  does not exist yet (ticks already fired are skipped).

Exit code 1 when the schedule does not exist; ``delete`` needs ``--yes``.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from durableflow.cli.common import (
    EXIT_ERROR,
    EXIT_NO,
    EXIT_OK,
    add_connection_options,
    console,
    facts_grid,
    fail,
    format_time,
    listing_table,
    noun,
    open_flow,
    parse_time,
    preview,
    print_json,
    visible,
)
from durableflow.errors import ScheduleNotFound

SCHEDULES_HELP = "cron schedules: list, pause, resume, trigger, backfill"


def register(subparsers: Any) -> None:
    verbs = noun(subparsers, "schedules", SCHEDULES_HELP)

    listing = verbs.add_parser("list", help="every schedule, by name")
    add_connection_options(listing)
    listing.set_defaults(func=list_command)

    for verb, handler, text in (
        ("show", show_command, "one schedule in full"),
        ("pause", pause_command, "stop firing a schedule's ticks"),
        ("resume", resume_command, "fire a paused schedule's ticks again, from now on"),
        ("trigger", trigger_command, "start one run of a schedule now"),
        ("delete", delete_command, "delete a schedule (its runs are kept)"),
    ):
        parser = verbs.add_parser(verb, help=text, description=text)
        parser.add_argument("name", metavar="NAME")
        add_connection_options(parser)
        parser.set_defaults(func=handler)
        if verb == "delete":
            parser.add_argument("--yes", action="store_true", help="really delete (required)")

    backfill = verbs.add_parser(
        "backfill",
        help="start the runs of a schedule's ticks in a past range",
        description="Start one run per tick of NAME in [--start, --end) whose run does not "
        "exist yet; prints the runs created.",
    )
    backfill.add_argument("name", metavar="NAME")
    backfill.add_argument(
        "--start", required=True, help="first tick time: an ISO 8601 time, or 2h, 7d ago"
    )
    backfill.add_argument("--end", help="end of the range, excluded (default: now)")
    add_connection_options(backfill)
    backfill.set_defaults(func=backfill_command)


def schedules_table(schedules: list[Any]) -> Any:
    from rich.text import Text

    table = listing_table(
        ("NAME", "WORKFLOW", "CRON", "TIMEZONE", "QUEUE", "STATE", "LAST TICK", "NEXT")
    )
    for schedule in schedules:
        table.add_row(
            Text(visible(schedule.name)),
            Text(visible(f"{schedule.workflow} v{schedule.version}")),
            Text(visible(schedule.cron)),
            Text(visible(schedule.timezone)),
            Text(visible(schedule.queue or "default")),
            "[yellow]paused[/]" if schedule.paused else "[green]active[/]",
            format_time(schedule.last_tick),
            format_time(schedule.next_tick),
        )
    return table


async def list_command(args: argparse.Namespace) -> int:
    async with open_flow(args) as flow:
        schedules = await flow.list_schedules()
    if args.json:
        print_json(schedules)
    else:
        console().print(schedules_table(schedules))
    return EXIT_OK


def _print_schedule(args: argparse.Namespace, schedule: Any) -> None:
    if args.json:
        print_json(schedule)
        return
    from rich.text import Text

    rows: list[tuple[str, Any]] = [
        ("schedule", Text(visible(schedule.name))),
        ("workflow", Text(visible(f"{schedule.workflow} v{schedule.version}"))),
        ("cron", Text(visible(f"{schedule.cron} ({schedule.timezone})"))),
        ("queue", Text(visible(schedule.queue or "default"))),
        ("state", "[yellow]paused[/]" if schedule.paused else "[green]active[/]"),
        ("catch up", "yes" if schedule.catch_up else "no (only the latest missed tick)"),
        ("last tick", format_time(schedule.last_tick) + _fired_by(schedule.fired_epoch)),
        ("next tick", format_time(schedule.next_tick)),
        ("context", Text(preview(schedule.context, 200))),
        ("declared", "@flow.scheduled" if schedule.declared else "create_schedule"),
        ("created", format_time(schedule.created_at)),
        ("updated", format_time(schedule.updated_at)),
    ]
    console().print(facts_grid(rows))


def _fired_by(epoch: int | None) -> str:
    return "" if epoch is None else f" (fired by leader epoch {epoch})"


async def _on_schedule(args: argparse.Namespace, act: Any) -> int:
    """Run ``act(flow)``; a missing schedule is exit 1 with one line on stderr."""
    async with open_flow(args) as flow:
        try:
            await act(flow)
        except ScheduleNotFound as exc:
            fail(str(exc))
            return EXIT_NO
    return EXIT_OK


async def show_command(args: argparse.Namespace) -> int:
    async def show(flow: Any) -> None:
        _print_schedule(args, await flow.get_schedule(args.name))

    return await _on_schedule(args, show)


async def pause_command(args: argparse.Namespace) -> int:
    async def pause(flow: Any) -> None:
        _print_schedule(args, await flow.pause_schedule(args.name))

    return await _on_schedule(args, pause)


async def resume_command(args: argparse.Namespace) -> int:
    async def resume(flow: Any) -> None:
        _print_schedule(args, await flow.resume_schedule(args.name))

    return await _on_schedule(args, resume)


async def trigger_command(args: argparse.Namespace) -> int:
    async def trigger(flow: Any) -> None:
        run_id = await flow.trigger_schedule(args.name)
        if args.json:
            print_json({"schedule": args.name, "run_id": run_id})
        else:
            print(run_id)

    return await _on_schedule(args, trigger)


async def delete_command(args: argparse.Namespace) -> int:
    if not args.yes:
        fail("schedules delete removes the schedule's definition; pass --yes to confirm")
        return EXIT_ERROR
    async with open_flow(args) as flow:
        deleted = await flow.delete_schedule(args.name)
    if args.json:
        print_json({"schedule": args.name, "deleted": deleted})
    elif deleted:
        print(f"schedule {args.name!r} deleted")
    else:
        fail(f"no schedule named {args.name!r}")
    return EXIT_OK if deleted else EXIT_NO


async def backfill_command(args: argparse.Namespace) -> int:
    start = parse_time(args.start)
    end = parse_time(args.end) if args.end else datetime.now(UTC)

    async def backfill(flow: Any) -> None:
        created = await flow.backfill_schedule(args.name, start, end)
        if args.json:
            print_json({"schedule": args.name, "runs": created})
        else:
            for run_id in created:
                print(run_id)
            print(f"{len(created)} runs started", flush=True)

    return await _on_schedule(args, backfill)
