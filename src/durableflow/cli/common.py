"""What the operator commands share: connection options, output, exit codes, nouns.

Exit codes (documented in docs/operations.md):

- ``0``: done;
- ``1``: the command ran but the answer is "no" for something asked: a run not found,
  an action refused or not applied to one of the ids given, a run that failed
  (``runs start --wait``);
- ``2``: the command could not run: bad arguments, configuration, Postgres unreachable.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from durableflow.errors import ConfigurationError

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table
    from rich.text import Text

    from durableflow.flow import Flow

__all__ = [
    "EXIT_ERROR",
    "EXIT_NO",
    "EXIT_OK",
    "add_connection_options",
    "console",
    "facts_grid",
    "fail",
    "format_seconds",
    "format_time",
    "json_text",
    "listing_table",
    "make_flow",
    "noun",
    "open_flow",
    "parse_json_argument",
    "parse_time",
    "preview",
    "print_json",
    "shorten",
    "styled_status",
    "visible",
]

EXIT_OK = 0
EXIT_NO = 1
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it

# parser -> its verbs' subparsers action, so that command modules can add verbs to a
# noun another module created (`runs fork` next to `runs list`).
_NOUN_VERBS: dict[int, Any] = {}


def noun(subparsers: Any, name: str, help_text: str) -> Any:
    """The verbs of command noun ``name`` (``runs``, ``queues``...), created on first use.

    Example (a feature's ``cli/runs_fork_cmd.py``)::

        def register(subparsers):
            verbs = noun(subparsers, "runs", RUNS_HELP)
            fork = verbs.add_parser("fork", help="start a new run from a run's step")
            add_connection_options(fork)
            fork.set_defaults(func=fork_command)
    """
    parser = subparsers.choices.get(name)
    if parser is None:
        parser = subparsers.add_parser(name, help=help_text, description=help_text)
        _NOUN_VERBS[id(parser)] = parser.add_subparsers(
            dest=f"{name}_command", metavar="VERB", required=True
        )
    return _NOUN_VERBS[id(parser)]


def add_connection_options(parser: argparse.ArgumentParser, *, app_required: bool = False) -> None:
    """``--dsn``, ``--schema``, ``-a/--app`` and ``--json``, the same on every command."""
    parser.add_argument(
        "--dsn",
        "--database-url",
        dest="dsn",
        metavar="URL",
        help="Postgres URL (default: DURABLEFLOW_DATABASE_URL, else the app's, else embedded)",
    )
    parser.add_argument("--schema", help="durableflow schema (default: DURABLEFLOW_SCHEMA_NAME)")
    parser.add_argument(
        "-a",
        "--app",
        required=app_required,
        metavar="MODULE:FLOW",
        help="the application's Flow, as package.module:attribute"
        + (" (required)" if app_required else " (needed only to decode with its types)"),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")


def make_flow(args: argparse.Namespace) -> Flow:
    """The Flow to work on: the app's (``-a``) or a bare one; ``--dsn``/``--schema`` win."""
    from durableflow.config import build_settings
    from durableflow.flow import Flow

    if getattr(args, "app", None):
        from durableflow.cli.loading import load_flow

        flow = load_flow(args.app)
        overrides = {}
        if args.dsn:
            overrides["database_url"] = args.dsn
        if args.schema:
            overrides["schema_name"] = args.schema
        if overrides:
            # No I/O happened yet (Flow connects on first use): the settings can change.
            flow.settings = build_settings(**{**flow.settings.model_dump(), **overrides})
        return flow
    return Flow(database_url=args.dsn, schema=args.schema)


@asynccontextmanager
async def open_flow(args: argparse.Namespace) -> AsyncIterator[Flow]:
    """``make_flow(args)``, closed when the command ends."""
    flow = make_flow(args)
    try:
        yield flow
    finally:
        await flow.close()


def console() -> Console:
    """A rich console for stdout; wide when not a terminal, so piped tables stay aligned."""
    from rich.console import Console

    if sys.stdout.isatty():
        return Console(highlight=False)
    return Console(highlight=False, width=200, no_color=True)


def error_console() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def print_json(value: Any, *, compact: bool = False) -> None:
    """``value`` as JSON on stdout (datetimes ISO 8601, uuids as text)."""
    from durableflow.admin import jsonable

    text = json.dumps(jsonable(value), indent=None if compact else 2, ensure_ascii=False)
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


# Wrappers rather than imports: importing durableflow.admin.formatting imports the
# admin package (its records and run-page sections), which `--help` does not need.
def format_time(value: datetime | None) -> str:
    """A timestamp as operators read it: UTC, to the second (as the web UI writes it)."""
    from durableflow.admin.formatting import format_time as admin_format_time

    return admin_format_time(value)


def format_seconds(seconds: float | None) -> str:
    """A duration as operators read it: ``850ms``, ``12.3s``, ``4m05s``, ``2h13m``."""
    from durableflow.admin.formatting import format_seconds as admin_format_seconds

    return admin_format_seconds(seconds)


def fail(message: str) -> None:
    """One line on stderr, as every command reports a problem."""
    print(f"durableflow: {visible(message)}", file=sys.stderr)


# C0 controls but tab and newline, DEL and the C1 range: the characters a terminal may
# obey (ESC and CSI start escape sequences that recolour, move the cursor, retitle).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible(text: str) -> str:
    """``text`` with its control characters (but newline and tab) written as ``\\x1b``.

    Stored values (names, error messages, tracebacks) come from workflow code and its
    inputs; printed as they are, an escape sequence among them would be obeyed by the
    operator's terminal instead of shown. Every stored value a command prints for the
    terminal goes through this; ``--json`` output does not (JSON escapes them itself).
    """
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str) -> datetime:
    """``30m``, ``2h``, ``7d`` (that long ago) or an ISO 8601 time (UTC if no zone)."""
    match = _DURATION.match(text.strip())
    if match:
        amount, unit = match.groups()
        try:
            return datetime.now(UTC) - timedelta(**{_UNITS[unit]: float(amount)})
        except (OverflowError, ValueError):  # before year 1, or past timedelta's range
            raise ConfigurationError(f"{text!r} reaches back before year 1") from None
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"cannot read {text!r} as a time: use 30m, 2h, 7d or an ISO 8601 time"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_json_argument(text: str, option: str) -> Any:
    """The JSON value of a command-line option, or ConfigurationError (exit 2)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{option} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigurationError(f"{option} is nested too deeply to read") from None
    except ValueError as exc:  # valid JSON still refused, e.g. an integer too long to convert
        raise ConfigurationError(f"{option} cannot be read: {exc}") from None


def listing_table(columns: Sequence[str], *, wrap: Sequence[str] = ()) -> Table:
    """A borderless table with bold headers, as every listing prints; only the columns
    named in ``wrap`` may wrap, the others stay on one line."""
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        table.add_column(column, no_wrap=column not in wrap)
    return table


def facts_grid(rows: Sequence[tuple[str, RenderableType]]) -> RenderableType:
    """``label  value`` lines, labels in bold, as ``runs show`` and ``leader`` print."""
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, value in rows:
        grid.add_row(label, value)
    return grid


STATUS_STYLES = {
    "queued": "cyan",
    "running": "blue",
    "waiting": "magenta",
    "blocked": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "bright_black",
    "dead": "bold red",
}


def styled_status(status: str) -> str:
    style = STATUS_STYLES.get(status)
    return f"[{style}]{status}[/]" if style else status


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters."""
    text = visible(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def json_text(value: Any) -> Text:
    """A value as indented, highlighted JSON for the terminal (what rich's ``JSON`` draws,
    but with the C1 controls JSON leaves raw made :func:`visible`)."""
    from rich.highlighter import JSONHighlighter

    text = JSONHighlighter()(visible(json.dumps(value, indent=2, ensure_ascii=False, default=str)))
    text.no_wrap = True
    text.overflow = None
    return text


def preview(value: Any, width: int = 60) -> str:
    """A value's JSON on one line, cut to ``width`` characters."""
    if value is None:
        return "-"
    return shorten(json.dumps(value, ensure_ascii=False, default=str), width)
