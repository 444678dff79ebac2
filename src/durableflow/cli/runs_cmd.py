"""``durableflow runs list | show | steps``: finding runs and looking inside them.

The actions on runs (``start``, ``cancel``, ``resume``, ``delete``) are in
``runs_actions_cmd``; features add their own verbs (``fork``, ``replay``, ``prune``,
``signal``) in modules of their own through :func:`~durableflow.cli.common.noun`.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from durableflow.cli.common import (
    EXIT_NO,
    EXIT_OK,
    add_connection_options,
    console,
    facts_grid,
    fail,
    format_seconds,
    format_time,
    json_text,
    noun,
    open_flow,
    parse_time,
    preview,
    print_json,
    shorten,
    styled_status,
    visible,
)
from durableflow.errors import RunNotFound

if TYPE_CHECKING:
    from rich.console import RenderableType

    from durableflow.admin import RunDetail, RunPage, SectionContent, StepAttempt
    from durableflow.flow import Flow, StepRecord

RUNS_HELP = "list, inspect, start, cancel, resume and signal runs"


def register(subparsers: Any) -> None:
    verbs = noun(subparsers, "runs", RUNS_HELP)

    listing = verbs.add_parser(
        "list",
        help="list runs, newest first",
        description="List runs, newest first, filtered; --watch keeps the list live.",
    )
    add_connection_options(listing)
    listing.add_argument(
        "--status", action="append", help="only runs in this status (repeatable, or a,b)"
    )
    listing.add_argument("--workflow", action="append", help="only this workflow (repeatable)")
    listing.add_argument("--queue", action="append", help="only this queue (repeatable)")
    listing.add_argument("--since", help="created since: 30m, 2h, 7d or an ISO 8601 time")
    listing.add_argument("--until", help="created before: 30m, 2h, 7d or an ISO 8601 time")
    listing.add_argument("--correlation-id", help="only runs with this correlation id")
    listing.add_argument("--parent", metavar="RUN_ID", help="only children of this run")
    listing.add_argument("--limit", type=int, default=20, help="runs per page (default 20)")
    listing.add_argument("--cursor", help="the next_cursor of a previous page (--json)")
    listing.add_argument("--oldest-first", action="store_true", help="oldest runs first")
    listing.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    listing.add_argument(
        "--interval", type=float, default=2.0, help="seconds between refreshes (default 2)"
    )
    listing.set_defaults(func=list_command)

    show = verbs.add_parser(
        "show",
        help="everything about one run",
        description="A run's status, timings, input, output or error with its traceback, "
        "its steps with durations and attempts, and the sections features add.",
    )
    show.add_argument("run_id", metavar="ID")
    add_connection_options(show)
    show.set_defaults(func=show_command)

    steps = verbs.add_parser("steps", help="a run's steps with durations and attempts")
    steps.add_argument("run_id", metavar="ID")
    add_connection_options(steps)
    steps.set_defaults(func=steps_command)


# -- list ------------------------------------------------------------------------------


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


async def _page(flow: Flow, args: argparse.Namespace) -> RunPage:
    return await flow.list_runs(
        status=_split(args.status),
        workflow=_split(args.workflow),
        queue=_split(args.queue),
        since=parse_time(args.since) if args.since else None,
        until=parse_time(args.until) if args.until else None,
        correlation_id=args.correlation_id,
        parent_id=args.parent,
        limit=args.limit,
        cursor=args.cursor,
        descending=not args.oldest_first,
    )


def runs_table(page: RunPage) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "WORKFLOW", "STATUS", "QUEUE", "CREATED", "DURATION", "ERROR"):
        table.add_column(column, no_wrap=column != "ERROR")
    for run in page:
        error = f"{run.error_type}: {run.error_message}" if run.error_type else ""
        table.add_row(
            str(run.id),
            Text(visible(f"{run.workflow} v{run.version}")),
            styled_status(run.status),
            Text(visible(run.queue)),
            format_time(run.created_at),
            format_seconds(run.duration),
            Text(shorten(error, 80)),
        )
    return table


def _fingerprint(page: RunPage) -> list[tuple[Any, ...]]:
    return [(run.id, run.status, run.updated_at) for run in page]


async def list_command(args: argparse.Namespace) -> int:
    async with open_flow(args) as flow:
        if not args.watch:
            page = await _page(flow, args)
            if args.json:
                print_json(page)
            else:
                out = console()
                out.print(runs_table(page))
                if page.next_cursor:
                    out.print(f"more: --cursor {page.next_cursor}", style="dim")
            return EXIT_OK
        return await _watch(flow, args)


async def _watch(flow: Flow, args: argparse.Namespace) -> int:
    """Refresh the listing every ``--interval`` seconds until interrupted.

    On a terminal the table redraws in place; otherwise (and with ``--json``, one
    compact JSON document a line) a new listing is printed only when it changed.
    """
    import asyncio

    out = console()
    previous: list[tuple[Any, ...]] | None = None
    live = None
    if out.is_terminal and not args.json:
        from rich.live import Live

        live = Live(console=out, auto_refresh=False)
        live.start()
    try:
        while True:
            page = await _page(flow, args)
            current = _fingerprint(page)
            if current != previous:
                previous = current
                if args.json:
                    print_json(page, compact=True)
                elif live is not None:
                    live.update(runs_table(page), refresh=True)
                else:
                    out.print(runs_table(page))
                    out.print()
            await asyncio.sleep(args.interval)
    finally:
        if live is not None:
            live.stop()


# -- show / steps ------------------------------------------------------------------


def _step_json(step: StepRecord, attempts: list[StepAttempt]) -> dict[str, Any]:
    duration = (step.finished_at - step.started_at).total_seconds() if step.started_at else None
    return {
        "step_id": step.step_id,
        "name": step.name,
        "kind": step.kind,
        "attempt": step.attempt,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "duration": duration,
        "output": step.output,
        "error": step.error,
        "failed_attempts": [a for a in attempts if a.step_id == step.step_id],
    }


async def _steps_and_attempts(
    flow: Flow, run_id: Any
) -> tuple[list[dict[str, Any]], list[StepAttempt]]:
    steps = await flow.steps(run_id)
    attempts = await flow.step_attempts(run_id)
    return [_step_json(step, attempts) for step in steps], attempts


def _error_line(error: dict[str, Any]) -> str:
    """``Type: message`` of a stored error, made visible for the terminal."""
    return visible(f"{error.get('type', '')}: {error.get('message', '')}")


def steps_table(steps: list[dict[str, Any]], attempts: list[StepAttempt]) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("#", "STEP", "KIND", "ATTEMPTS", "STARTED", "DURATION", "RESULT"):
        table.add_column(column, no_wrap=column != "RESULT")
    committed = {step["step_id"] for step in steps}
    for step in steps:
        error = step["error"]
        result = (
            Text("error " + _error_line(error), style="red")
            if error
            else Text(preview(step["output"]))
        )
        failed = len(step["failed_attempts"])
        table.add_row(
            str(step["step_id"]),
            Text(visible(step["name"])),
            step["kind"],
            f"{step['attempt']}" + (f" ({failed} failed)" if failed else ""),
            format_time(step["started_at"]),
            format_seconds(step["duration"]),
            result,
        )
    for attempt in attempts:
        if attempt.step_id not in committed:  # failed, set aside, not yet run again
            table.add_row(
                str(attempt.step_id),
                Text(visible(attempt.name)),
                "step",
                f"{attempt.attempt} (failed)",
                format_time(attempt.started_at),
                format_seconds(
                    (attempt.failed_at - attempt.started_at).total_seconds()
                    if attempt.started_at
                    else None
                ),
                Text(
                    "error " + _error_line(attempt.error),
                    style="red",
                ),
            )
    return table


def attempts_table(attempts: list[StepAttempt]) -> RenderableType:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("#", "STEP", "ATTEMPT", "FAILED AT", "ERROR"):
        table.add_column(column, no_wrap=column != "ERROR")
    for attempt in attempts:
        table.add_row(
            str(attempt.step_id),
            Text(visible(attempt.name)),
            str(attempt.attempt),
            format_time(attempt.failed_at),
            Text(_error_line(attempt.error)),
        )
    return table


async def steps_command(args: argparse.Namespace) -> int:
    async with open_flow(args) as flow:
        try:
            await flow.describe_run(args.run_id)  # RunNotFound for an unknown id
        except RunNotFound as exc:
            fail(str(exc))
            return EXIT_NO
        steps, attempts = await _steps_and_attempts(flow, args.run_id)
    if args.json:
        print_json(steps)
    else:
        console().print(steps_table(steps, attempts))
    return EXIT_OK


def _section_json(content: SectionContent) -> dict[str, Any]:
    return {
        "kind": content.kind,
        "columns": content.columns,
        "rows": content.rows,
        "value": content.value,
        "caption": content.caption,
    }


def _render_section(content: SectionContent) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    body: RenderableType
    if content.kind == "table":
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in content.columns:
            table.add_column(Text(visible(column)))
        for row in content.rows:
            table.add_row(
                *(
                    Text(preview(cell, 80) if not isinstance(cell, str) else visible(cell))
                    for cell in row
                )
            )
        body = table
    elif content.kind == "json":
        body = json_text(content.value)
    else:
        body = Text(visible(str(content.value)))  # text, and a diagram's Mermaid source
    if not content.caption:
        return body
    # Under the section, not as the table's caption: rich would wrap it to the table's width.
    return Group(body, Text(visible(content.caption), style="dim"))


def _run_header(run: RunDetail) -> RenderableType:
    from rich.text import Text

    fields: list[tuple[str, Any]] = [
        ("run", str(run.id)),
        ("workflow", Text(visible(f"{run.workflow} v{run.version}"))),
        ("status", styled_status(run.status)),
        ("queue", Text(visible(f"{run.queue} (priority {run.priority})"))),
        ("created", format_time(run.created_at)),
        ("started", format_time(run.started_at)),
        ("finished", format_time(run.finished_at)),
        ("duration", format_seconds(run.duration)),
        (
            "claims",
            Text(
                visible(f"{run.claims} (lease epoch {run.lease_epoch}, owner {run.owner or '-'})")
            ),
        ),
        ("code hash", Text(visible(run.code_hash or "-"))),
    ]
    if run.status == "waiting":
        fields.append(("waiting for", Text(visible(", ".join(run.waiting_for)) or "time")))
        wakes = run.wakes_at
        if wakes is not None and (run.deadline is None or wakes < run.deadline):
            fields.append(("wakes", format_time(wakes)))
    for label, value in (
        ("deadline", format_time(run.deadline) if run.deadline else None),
        ("correlation id", run.correlation_id),
        ("idempotency key", run.idempotency_key),
        ("parent", run.parent_id),
        ("replayed from", run.replayed_from),
        ("forked from", run.forked_from),
    ):
        if value is not None:
            fields.append((label, Text(visible(str(value)))))
    return facts_grid(fields)


async def show_command(args: argparse.Namespace) -> int:
    from durableflow.admin import load_run_sections

    async with open_flow(args) as flow:
        try:
            run = await flow.describe_run(args.run_id)
        except RunNotFound as exc:
            fail(str(exc))
            return EXIT_NO
        steps, attempts = await _steps_and_attempts(flow, run.id)
        sections = await load_run_sections(flow, run)
    if args.json:
        print_json(
            {
                "run": run,
                "steps": steps,
                "sections": {
                    section.name: {"title": section.title, **_section_json(content)}
                    for section, content in sections
                },
            }
        )
        return EXIT_OK

    from rich.rule import Rule
    from rich.text import Text

    out = console()
    out.print(_run_header(run))
    out.print(Rule("input", align="left"))
    out.print(json_text(run.input) if run.input is not None else "-")
    if run.status == "succeeded":
        out.print(Rule("output", align="left"))
        out.print(json_text(run.output) if run.output is not None else "-")
    if run.error:
        out.print(Rule("error", align="left", style="red"))
        out.print(Text(_error_line(run.error), style="red"))
        if run.error.get("traceback"):
            out.print(Text(visible(run.error["traceback"].rstrip())))
    out.print(Rule(f"steps ({len(steps)})", align="left"))
    out.print(steps_table(steps, attempts))
    for step in steps:
        if step["error"] and step["error"].get("traceback"):
            heading = f"step {step['name']} (#{step['step_id']}) traceback:"
            out.print(Text(visible(heading), style="bold"))
            out.print(Text(visible(step["error"]["traceback"].rstrip())))
    if attempts:
        out.print(Rule(f"failed attempts ({len(attempts)})", align="left"))
        out.print(attempts_table(attempts))
    for section, content in sections:
        out.print(Rule(section.title, align="left"))
        out.print(_render_section(content))
    return EXIT_OK
