"""Artefact commands: ``durableflow runs replay|fork|prune|watch`` and ``durableflow lineage``.

- ``runs replay RUN_ID --from-stage STAGE [--config JSON]``: new run, earlier stages
  republished from storage; prints the new run id
- ``runs fork RUN_ID --from-step STEP``: new run continuing from a step (id or name)
- ``runs prune [RUN_ID] [--older-than 30d | --before ISO] [--workflow W] [--status S]``
  or ``runs prune --apply-retention``: delete finished runs, storage first
- ``runs watch RUN_ID``: print the run's events until it finishes
- ``lineage KEY [--down] [--depth N]``: what an artefact was made from (or made into)

Each takes ``--database-url`` / ``--schema`` / ``--storage`` (defaults: the
``DURABLEFLOW_*`` environment), or ``--app module:flow`` to use the Flow of an app
(its storage provider included). ``--json`` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

from durableflow.cli.families import command_family
from durableflow.cli.loading import load_flow
from durableflow.errors import InvalidFieldValue
from durableflow.flow import Flow

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def register(subparsers: Any) -> None:
    """Add the artefact verbs to ``runs`` and the ``lineage`` command."""
    runs = command_family(
        subparsers,
        "runs",
        help="inspect and manage runs",
        description="Operate on runs: replay, fork, prune, watch.",
    )

    replay = runs.add_parser(
        "replay",
        help="start a new run whose earlier stages are republished from storage",
        description="Start a new run of the same workflow version: every step before the "
        "first execution of --from-stage returns its output read back from storage "
        "(sha256-verified); the rest runs anew. Nothing starts if an artefact is missing.",
    )
    replay.add_argument("run_id")
    replay.add_argument("--from-stage", required=True, help="step (or graph state) to rerun from")
    replay.add_argument("--config", help="new configuration as a JSON object (default: the run's)")
    _common(replay)
    replay.set_defaults(func=replay_command)

    fork = runs.add_parser(
        "fork",
        help="start a new run continuing from a step, history copied from the database",
    )
    fork.add_argument("run_id")
    fork.add_argument("--from-step", required=True, help="step id, or step name")
    _common(fork)
    fork.set_defaults(func=fork_command)

    prune = runs.add_parser(
        "prune",
        help="delete finished runs: artefacts, lineage, then rows",
        description="Delete one finished run, or every finished run older than a cutoff, "
        "or what the retention policies say has expired. Storage goes first, so an "
        "interrupted prune is finished by running it again.",
    )
    prune.add_argument("run_id", nargs="?", help="prune this one run")
    prune.add_argument("--older-than", metavar="AGE", help="e.g. 30d, 12h, 90m")
    prune.add_argument("--before", metavar="ISO", help="finished before this time (with zone)")
    prune.add_argument("--workflow", help="only runs of this workflow")
    prune.add_argument(
        "--status", action="append", help="only runs in this final status (repeatable)"
    )
    prune.add_argument(
        "--apply-retention", action="store_true", help="prune what retention policies expire"
    )
    _common(prune)
    prune.set_defaults(func=prune_command)

    watch = runs.add_parser("watch", help="print a run's events until it finishes")
    watch.add_argument("run_id")
    _common(watch)
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
    _common(lineage)
    lineage.set_defaults(func=lineage_command)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--app", help="use the Flow of this app (package.module:attribute)")
    parser.add_argument("--database-url", help="Postgres URL (default: DURABLEFLOW_DATABASE_URL)")
    parser.add_argument("--schema", help="schema name (default: DURABLEFLOW_SCHEMA_NAME)")
    parser.add_argument("--storage", help="storage URL (default: DURABLEFLOW_STORAGE_URL)")
    parser.add_argument("--json", action="store_true", help="print JSON")


@asynccontextmanager
async def _flow(args: argparse.Namespace) -> AsyncIterator[Flow]:
    if args.app:
        flow = load_flow(args.app)
    else:
        flow = Flow(database_url=args.database_url, schema=args.schema, storage=args.storage)
    async with flow:
        yield flow


def _print(args: argparse.Namespace, value: Any, text: str) -> None:
    print(json.dumps(value, default=str, sort_keys=True) if args.json else text, flush=True)


async def replay_command(args: argparse.Namespace) -> int:
    config = None
    if args.config is not None:
        try:
            config = json.loads(args.config)
        except ValueError as exc:
            raise InvalidFieldValue("config", f"--config is not JSON ({exc})") from None
    async with _flow(args) as flow:
        new_id = await flow.replay(args.run_id, from_stage=args.from_stage, config=config)
    _print(args, {"run_id": str(new_id), "replayed_from": args.run_id}, str(new_id))
    return 0


async def fork_command(args: argparse.Namespace) -> int:
    from_step: int | str = int(args.from_step) if args.from_step.isdigit() else args.from_step
    async with _flow(args) as flow:
        new_id = await flow.fork(args.run_id, from_step=from_step)
    _print(args, {"run_id": str(new_id), "forked_from": args.run_id}, str(new_id))
    return 0


def _cutoff(args: argparse.Namespace, now: datetime) -> datetime | None:
    if args.older_than and args.before:
        raise InvalidFieldValue("--before", "give --older-than or --before, not both")
    if args.older_than:
        match = _DURATION.fullmatch(args.older_than.strip())
        if match is None:
            raise InvalidFieldValue("--older-than", f"{args.older_than!r}: use e.g. 30d, 12h, 90m")
        return now - timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    if args.before:
        try:
            return datetime.fromisoformat(args.before)
        except ValueError:
            raise InvalidFieldValue("--before", f"{args.before!r} is not an ISO time") from None
    return None


async def prune_command(args: argparse.Namespace) -> int:
    cutoff = _cutoff(args, datetime.now(UTC))
    chosen = sum(bool(x) for x in (args.run_id, cutoff, args.apply_retention))
    if chosen != 1:
        raise InvalidFieldValue(
            "runs prune", "give exactly one of RUN_ID, --older-than/--before, --apply-retention"
        )
    async with _flow(args) as flow:
        if args.run_id:
            result = await flow.prune(args.run_id)
        elif args.apply_retention:
            result = await flow.apply_retention()
        else:
            assert cutoff is not None
            filters: dict[str, Any] = {"status": tuple(args.status)} if args.status else {}
            result = await flow.prune(before=cutoff, workflow=args.workflow, **filters)
    rows = ", ".join(f"{table} {count}" for table, count in sorted(result.rows.items()))
    _print(
        args,
        asdict(result),
        f"pruned {result.runs} runs, {result.artefacts} artefacts" + (f" ({rows})" if rows else ""),
    )
    return 0


async def watch_command(args: argparse.Namespace) -> int:
    async with _flow(args) as flow:
        async for event in flow.watch(args.run_id):
            detail = event.status or f"{event.name}#{event.step_id}" + (
                f" {event.key}" if event.key else ""
            )
            _print(args, asdict(event), f"{event.at.isoformat()} {event.kind} {detail}")
    return 0


async def lineage_command(args: argparse.Namespace) -> int:
    async with _flow(args) as flow:
        nodes = await flow.lineage(
            args.key, direction="down" if args.down else "up", depth=args.depth
        )
    if args.json:
        print(json.dumps([asdict(node) for node in nodes], default=str, sort_keys=True))
        return 0
    for node in nodes:
        config = (node.config_hash or "-")[:12]
        print(f"{'  ' * node.depth}{node.key}  sha256={node.sha256[:12]} config={config}")
    return 0
