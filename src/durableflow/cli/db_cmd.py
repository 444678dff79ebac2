"""``durableflow db upgrade | check | current | sql``: the schema, from the command line."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from durableflow.cli.common import make_flow, print_json

if TYPE_CHECKING:
    from durableflow import SchemaStatus


def register(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="create, check or inspect durableflow's schema")
    actions = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    for name, handler, text in (
        ("upgrade", upgrade, "migrate the schema to the newest revision (idempotent)"),
        ("check", check, "exit 1 when the schema is behind this version of durableflow"),
        ("current", current, "print the schema's revision and the newest one"),
        ("sql", sql, "print the SQL an upgrade from scratch would run"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        # As the operator commands take them (cli.common.add_connection_options).
        action.add_argument(
            "--dsn",
            "--database-url",
            dest="dsn",
            metavar="URL",
            help="Postgres URL (default: DURABLEFLOW_DATABASE_URL, else embedded Postgres)",
        )
        action.add_argument(
            "--schema", help="durableflow schema (default: DURABLEFLOW_SCHEMA_NAME)"
        )
        if handler is not sql:
            action.add_argument(
                "--json",
                action="store_true",
                help='print {"schema", "current", "head", "up_to_date"} as JSON',
            )
        action.set_defaults(func=handler)


def _print_status(status: SchemaStatus) -> None:
    print_json(
        {
            "schema": status.schema,
            "current": status.current,
            "head": status.head,
            "up_to_date": status.up_to_date,
        }
    )


async def upgrade(args: argparse.Namespace) -> int:
    async with make_flow(args) as flow:
        await flow.migrate()
        status = await flow.schema_status()
    if args.json:
        _print_status(status)
    else:
        print(f"schema {status.schema!r} is at {status.current} (newest)")
    return 0


async def check(args: argparse.Namespace) -> int:
    async with make_flow(args) as flow:
        status = await flow.schema_status()
    if args.json:
        _print_status(status)
        return 0 if status.up_to_date else 1
    if status.up_to_date:
        print(f"schema {status.schema!r} is up to date ({status.head})")
        return 0
    print(
        f"schema {status.schema!r} is at {status.current or 'nothing'} but this durableflow "
        f"needs {status.head}: run `durableflow db upgrade`"
    )
    return 1


async def current(args: argparse.Namespace) -> int:
    async with make_flow(args) as flow:
        status = await flow.schema_status()
    if args.json:
        _print_status(status)
    else:
        print(f"current: {status.current or 'none'}\nhead:    {status.head}")
    return 0


async def sql(args: argparse.Namespace) -> int:
    print(make_flow(args).migration_sql())
    return 0
