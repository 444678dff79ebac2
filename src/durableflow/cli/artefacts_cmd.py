"""Artefact commands: ``durableflow runs replay|fork|prune|watch`` and ``durableflow lineage``.

- ``runs replay ID --from-stage STAGE [--config JSON]``: a new run whose earlier stages
  are republished from storage; prints its id
- ``runs fork ID --from-step STEP``: a new run continuing from a step (id or name)
- ``runs prune ID`` / ``runs prune --older-than 30d|--before ISO [--workflow W]
  [--status S]`` / ``runs prune --apply-retention``: delete finished runs, storage first
  (by age: with a progress bar on a terminal)
- ``runs watch ID``: print the run's events (a graph run's states included) until it
  finishes
- ``lineage KEY [--down] [--depth N]``: what an artefact was made from (or made into)

Each takes the operator commands' ``--dsn``, ``--schema``, ``-a/--app`` and ``--json``
(``cli.common``), plus ``--storage URL`` (default: the app's storage, else
``DURABLEFLOW_STORAGE_URL``). Exit codes as for every operator command: 1 for a
refused prune, 2 for an error (a replay refused for a missing artefact included).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from durableflow.cli.common import (
    EXIT_NO,
    EXIT_OK,
    add_connection_options,
    console,
    fail,
    make_flow,
    noun,
    parse_json_argument,
    parse_time,
    print_json,
    visible,
)
from durableflow.cli.runs_cmd import RUNS_HELP
from durableflow.errors import InvalidFieldValue, RunActionRefused

if TYPE_CHECKING:
    from durableflow import Flow, PruneResult


def register(subparsers: Any) -> None:
    """Add the artefact verbs to ``runs`` and the ``lineage`` command."""
    verbs = noun(subparsers, "runs", RUNS_HELP)

    replay = verbs.add_parser(
        "replay",
        help="start a new run whose earlier stages are republished from storage",
        description="Start a new run of the same workflow version: every step before the "
        "first execution of --from-stage returns its output read back from storage "
        "(sha256-verified); the rest runs anew. Nothing starts if an artefact is missing.",
    )
    replay.add_argument("run_id", metavar="ID")
    replay.add_argument(
        "--from-stage",
        required=True,
        help="step name to rerun from; for a graph run a state name (or state:NAME)",
    )
    replay.add_argument("--config", metavar="JSON", help="new configuration (default: the run's)")
    _options(replay)
    replay.set_defaults(func=replay_command)

    fork = verbs.add_parser(
        "fork",
        help="start a new run continuing from a step, history copied from the database",
    )
    fork.add_argument("run_id", metavar="ID")
    fork.add_argument(
        "--from-step",
        required=True,
        help="step id, or step name; for a graph run a state name (or state:NAME)",
    )
    _options(fork)
    fork.set_defaults(func=fork_command)

    prune = verbs.add_parser(
        "prune",
        help="delete finished runs: artefacts, lineage, then rows",
        description="Delete one finished run, every finished run older than a cutoff, or "
        "what the retention policies say has expired. Storage goes first, so an "
        "interrupted prune is finished by running it again.",
    )
    prune.add_argument("run_id", metavar="ID", nargs="?", help="prune this one run")
    prune.add_argument("--older-than", metavar="AGE", help="finished that long ago: 30m, 2h, 7d")
    prune.add_argument("--before", metavar="TIME", help="finished before this ISO 8601 time")
    prune.add_argument("--workflow", help="only runs of this workflow")
    prune.add_argument(
        "--status", action="append", help="only runs in this final status (repeatable)"
    )
    prune.add_argument(
        "--apply-retention", action="store_true", help="prune what retention policies expire"
    )
    _options(prune)
    prune.set_defaults(func=prune_command)

    watch = verbs.add_parser("watch", help="print a run's events until it finishes")
    watch.add_argument("run_id", metavar="ID")
    _options(watch)
    watch.set_defaults(func=watch_command)

    lineage = subparsers.add_parser(
        "lineage",
        help="what an artefact was made from (or what was made from it)",
        description="Walk the lineage of the artefact under KEY: its inputs, their inputs... "
        "(or, with --down, what was made from it).",
    )
    lineage.add_argument("key", help="artefact key, e.g. executions/<run>/<workflow>/<step>/0.json")
    lineage.add_argument("--down", action="store_true", help="walk to what was made from it")
    lineage.add_argument("--depth", type=int, default=None, help="levels to walk (default: all)")
    _options(lineage)
    lineage.set_defaults(func=lineage_command)


def _options(parser: argparse.ArgumentParser) -> None:
    add_connection_options(parser)
    parser.add_argument(
        "--storage",
        metavar="URL",
        help="storage URL (default: the app's storage, else DURABLEFLOW_STORAGE_URL)",
    )


@asynccontextmanager
async def _open(args: argparse.Namespace) -> AsyncIterator[Flow]:
    flow = make_flow(args)
    if args.storage:
        from durableflow.config import build_settings

        # No I/O has happened yet: the settings (and so the storage) can still change.
        flow.settings = build_settings(
            **{**flow.settings.model_dump(), "storage_url": args.storage}
        )
    try:
        yield flow
    finally:
        await flow.close()


async def replay_command(args: argparse.Namespace) -> int:
    config = parse_json_argument(args.config, "--config") if args.config is not None else None
    async with _open(args) as flow:
        new_id = await flow.replay(args.run_id, from_stage=args.from_stage, config=config)
    if args.json:
        print_json({"run_id": new_id, "replayed_from": args.run_id})
    else:
        print(new_id)
    return EXIT_OK


async def fork_command(args: argparse.Namespace) -> int:
    number = args.from_step.isascii() and args.from_step.isdigit()  # isdigit() alone takes '²'
    from_step: int | str = int(args.from_step) if number else args.from_step
    async with _open(args) as flow:
        new_id = await flow.fork(args.run_id, from_step=from_step)
    if args.json:
        print_json({"run_id": new_id, "forked_from": args.run_id})
    else:
        print(new_id)
    return EXIT_OK


async def prune_command(args: argparse.Namespace) -> int:
    if args.older_than and args.before:
        raise InvalidFieldValue("--before", "give --older-than or --before, not both")
    cutoff_text = args.older_than or args.before
    cutoff = parse_time(cutoff_text) if cutoff_text else None
    if sum(bool(x) for x in (args.run_id, cutoff, args.apply_retention)) != 1:
        raise InvalidFieldValue(
            "runs prune", "give exactly one of ID, --older-than/--before, --apply-retention"
        )
    async with _open(args) as flow:
        try:
            if args.run_id:
                result = await flow.prune(args.run_id)
            elif args.apply_retention:
                result = await flow.apply_retention()
            else:
                assert cutoff is not None
                filters: dict[str, Any] = {"status": tuple(args.status)} if args.status else {}
                with _progress_bar(shown=not args.json and sys.stdout.isatty()) as progress:
                    result = await flow.prune(
                        before=cutoff, workflow=args.workflow, progress=progress, **filters
                    )
        except RunActionRefused as exc:
            fail(str(exc))
            return EXIT_NO
    if args.json:
        print_json(asdict(result))
    else:
        rows = ", ".join(f"{table} {count}" for table, count in sorted(result.rows.items()))
        print(
            f"pruned {result.runs} runs, {result.artefacts} artefacts"
            + (f" ({rows})" if rows else "")
        )
    return EXIT_OK


@contextmanager
def _progress_bar(*, shown: bool) -> Iterator[Callable[[PruneResult, int], None] | None]:
    """A progress bar while a prune by age runs, or None (``--json``, or stdout not a
    terminal: a script wants the counts at the end, not the bar's redraws)."""
    if not shown:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("pruning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("runs, {task.fields[artefacts]} artefacts"),
        TimeElapsedColumn(),
    )
    # Log handlers writing to the terminal (the run_pruned lines) would write through
    # the bar: while it is drawn they write to rich's stand-in for sys.stderr, which
    # prints each line above the bar.
    on_terminal = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler) and _is_terminal(handler.stream)
    ]
    with Progress(*columns, console=console()) as bar:
        task = bar.add_task("prune", total=None, artefacts=0)
        moved = [(handler, handler.setStream(sys.stderr)) for handler in on_terminal]

        def report(done: PruneResult, total: int) -> None:
            handled = done.runs + len(done.skipped)
            # More than counted: runs that finished meanwhile are pruned too.
            bar.update(task, completed=handled, total=max(total, handled), artefacts=done.artefacts)

        try:
            yield report
        finally:
            for handler, stream in moved:
                handler.setStream(stream)
        # Fewer than counted (another prune took some): the bar ends full all the same.
        finished = bar.tasks[0].completed
        bar.update(task, total=finished)


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


async def watch_command(args: argparse.Namespace) -> int:
    async with _open(args) as flow:
        async for event in flow.watch(args.run_id):
            if args.json:
                print_json(asdict(event), compact=True)
                continue
            if event.kind == "state_changed":
                detail = f"{event.previous_state or '(start)'} -> {event.state}"
            else:
                detail = event.status or f"{event.name}#{event.step_id}"
            line = f"{event.at.isoformat()} {event.kind} {detail}" + (
                f" {event.key}" if event.key else ""
            )
            print(visible(line), flush=True)
    return EXIT_OK


async def lineage_command(args: argparse.Namespace) -> int:
    async with _open(args) as flow:
        nodes = await flow.lineage(
            args.key, direction="down" if args.down else "up", depth=args.depth
        )
    if args.json:
        print_json([asdict(node) for node in nodes])
        return EXIT_OK
    for node in nodes:
        config = (node.config_hash or "-")[:12]
        line = f"{node.key}  sha256={node.sha256[:12]} config={config}"
        print("  " * node.depth + visible(line))
    return EXIT_OK
