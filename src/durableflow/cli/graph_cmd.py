"""``durableflow graph show | list``: a graph as a Mermaid diagram, and the published graphs.

``graph show app.module:flow NAME [--version N] [--run RUN_ID] [--json]`` prints the
graph's Mermaid ``stateDiagram-v2`` (paste it into any Mermaid renderer); with
``--run`` the run's current state is highlighted and the graph is drawn at the run's
version. The graph is one registered on the app's Flow, else a published one (which
needs the database: ``--dsn`` / ``--schema`` or the app's settings).
"""

from __future__ import annotations

import argparse
from typing import Any

from durableflow.cli.common import (
    EXIT_NO,
    EXIT_OK,
    add_connection_options,
    console,
    fail,
    format_time,
    noun,
    open_flow,
    print_json,
    visible,
)
from durableflow.cli.loading import load_flow
from durableflow.errors import RunNotFound, WorkflowNotFound

GRAPH_HELP = "draw graphs (Mermaid) and list the published ones"


def register(subparsers: Any) -> None:
    verbs = noun(subparsers, "graph", GRAPH_HELP)

    show = verbs.add_parser(
        "show",
        help="print a graph as a Mermaid stateDiagram-v2",
        description="Print a graph as a Mermaid stateDiagram-v2: manual and terminal states "
        "marked, and with --run the run's current state highlighted.",
    )
    show.add_argument("app", metavar="MODULE:FLOW", help="where the Flow is, e.g. app.graphs:flow")
    show.add_argument("name", metavar="NAME", help="the graph's name")
    show.add_argument("--version", type=int, help="the graph's version (default: the highest)")
    show.add_argument("--run", metavar="RUN_ID", help="highlight this run's current state")
    show.add_argument("--dsn", "--database-url", dest="dsn", metavar="URL", help="Postgres URL")
    show.add_argument("--schema", help="durableflow schema (default: DURABLEFLOW_SCHEMA_NAME)")
    show.add_argument("--json", action="store_true", help="print JSON instead of the diagram")
    show.set_defaults(func=show_command)

    listing = verbs.add_parser(
        "list",
        help="list published graph versions",
        description="Every graph version published with flow.publish_graph, oldest name first.",
    )
    add_connection_options(listing)
    listing.set_defaults(func=list_command)


async def show_command(args: argparse.Namespace) -> int:
    flow = load_flow(args.app)
    overrides = {}
    if args.dsn:
        overrides["database_url"] = args.dsn
    if args.schema:
        overrides["schema_name"] = args.schema
    if overrides:  # no I/O happened yet: the settings can still change
        from durableflow.config import build_settings

        flow.settings = build_settings(**{**flow.settings.model_dump(), **overrides})
    try:
        version = args.version
        current = None
        if args.run:
            try:
                status = await flow.status(args.run)
            except RunNotFound:
                fail(f"no run with id {args.run}")
                return EXIT_NO
            if status.workflow != args.name:
                fail(f"run {args.run} is a run of {status.workflow!r}, not of {args.name!r}")
                return EXIT_NO
            version, current = status.version, status.state
        try:
            graph = await flow.graph(args.name, version)
        except WorkflowNotFound as exc:
            fail(str(exc))
            return EXIT_NO
        mermaid = graph.to_mermaid(current=current)
        if args.json:
            print_json(
                {
                    "name": graph.name,
                    "version": graph.version,
                    "initial": graph.initial,
                    "current": current,
                    "run_id": args.run,
                    "mermaid": mermaid,
                }
            )
        else:
            print(mermaid, end="")
        return EXIT_OK
    finally:
        await flow.close()


async def list_command(args: argparse.Namespace) -> int:
    async with open_flow(args) as flow:
        graphs = await flow.list_graphs()
    if args.json:
        print_json(graphs)
        return EXIT_OK
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold")
    for column in ("name", "version", "states", "hash", "published"):
        table.add_column(column)
    for graph in graphs:
        table.add_row(
            Text(visible(graph.name)),  # a Text: a str would be read as rich markup
            str(graph.version),
            str(len(graph.spec.get("states", []))),
            Text(visible(graph.hash[:12])),
            format_time(graph.published_at),
        )
    console().print(table if graphs else "no published graphs")
    return EXIT_OK
