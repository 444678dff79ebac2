"""``durableflow audit app.module:flow``: fail CI when a workflow changed without a version bump.

Exit codes: 0 when the code matches the manifest (or ``--update`` wrote it), 1 with
one line per problem saying what to do, 2 when the input is unusable (the module does
not import, the object is not a Flow, the manifest is malformed, the database cannot
be read).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from durableflow.cli.loading import load_flow
from durableflow.errors import AuditError, ConfigurationError, DatabaseError

if TYPE_CHECKING:
    from durableflow.audit import AuditReport

# durableflow.audit.MANIFEST_FILENAME, written out: importing durableflow.audit imports
# the engine, which `durableflow audit --help` does not need (tests/unit/test_cli_imports.py
# checks that the two agree).
MANIFEST_FILENAME = "durableflow.lock.json"

DESCRIPTION = f"""\
Compare the code hash of every workflow registered on a Flow with the committed
manifest ({MANIFEST_FILENAME} next to pyproject.toml by default). Fails (exit 1) when
a workflow changed without a version bump, was removed or renamed, or its version went
down; a new workflow or a bumped version asks for --update. Exit 2 on unusable input.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``audit`` subcommand; its handler is ``handle_audit``."""
    parser = subparsers.add_parser(
        "audit",
        help="check that changed workflows had their version bumped (CI gate)",
        description=DESCRIPTION,
    )
    parser.add_argument(
        "app", metavar="MODULE:FLOW", help="where the Flow is, e.g. app.workflows:flow"
    )
    parser.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help=f"manifest file (default: {MANIFEST_FILENAME} next to the nearest pyproject.toml)",
    )
    parser.add_argument(
        "--update",
        action="store_true",
        help="rewrite the manifest from the code after a deliberate version bump",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --update: also accept errors (a body changed without a bump, a removed "
        "workflow); only when no run of the old code is in flight",
    )
    parser.add_argument(
        "--json", action="store_true", dest="as_json", help="print one JSON report on stdout"
    )
    parser.add_argument(
        "--check-database",
        action="store_true",
        help="also list in-flight runs whose recorded version/code hash no registered "
        "workflow has (needs the Flow's database URL)",
    )
    parser.set_defaults(func=handle_audit)


async def handle_audit(args: argparse.Namespace) -> int:
    """Run the audit for parsed ``args`` and print the result; returns the exit code."""
    from durableflow.audit import find_manifest_path, run_audit

    manifest_path: Path = args.manifest or find_manifest_path()
    update_command = f"durableflow audit {args.app}"
    if args.manifest is not None:
        update_command += f" --manifest {args.manifest}"
    update_command += " --update"
    try:
        flow = load_flow(args.app)
        database = None
        if args.check_database:
            database = (flow.settings.database_url, flow.settings.schema_name)
        report = await run_audit(
            flow.registry,
            manifest_path=manifest_path,
            update=args.update,
            force=args.force,
            database=database,
            update_command=update_command,
        )
    except (ConfigurationError, AuditError, DatabaseError) as exc:
        return _unusable(str(exc), as_json=args.as_json)
    if args.as_json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        _print_text(report, args)
    return report.exit_code


def _unusable(message: str, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "exit_code": 2, "error": message}, indent=2))
    print(f"durableflow audit: error: {message}", file=sys.stderr)
    return 2


def _shown(path: Path) -> str:
    """The path relative to the current directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _print_text(report: AuditReport, args: argparse.Namespace) -> None:
    from durableflow.audit import ERROR

    manifest = _shown(report.manifest_path)
    count = len(report.current.workflows)
    if report.update_refused:
        for finding in report.findings:
            print(f"{finding.level}: {finding.message}")
        print(
            f"durableflow audit: not updating {manifest}: fix the errors above, or add "
            "--force to accept them if no run of the old code is in flight",
            file=sys.stderr,
        )
    elif report.update_requested:
        for finding in report.accepted:
            print(f"accepted with --force: {finding.message}")
        state = "written" if report.updated else "already up to date"
        print(f"durableflow audit: {manifest} {state} ({count} workflow(s))")
    elif report.findings:
        for finding in report.findings:
            print(f"{finding.level}: {finding.message}")
    for finding in report.in_flight or ():
        print(f"{finding.level}: {finding.message}")
    if report.ok and not report.update_requested:
        checked = " and the in-flight runs" if report.in_flight is not None else ""
        print(f"durableflow audit: {count} workflow(s) match {manifest}{checked}")
    elif not report.ok and not report.update_refused:
        manifest_problems = [] if report.update_requested else report.findings
        problems = [*manifest_problems, *(report.in_flight or [])]
        errors = sum(1 for finding in problems if finding.level == ERROR)
        print(
            f"durableflow audit: {len(problems)} problem(s), {errors} error(s) against {manifest}",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    """Run ``audit`` alone (``python -m durableflow.cli.audit_cmd MODULE:FLOW ...``)."""
    parser = argparse.ArgumentParser(prog="durableflow")
    subparsers = parser.add_subparsers(dest="command", required=True)
    register(subparsers)
    args = parser.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    import asyncio

    exit_code: Any = asyncio.run(args.func(args))
    return int(exit_code)


if __name__ == "__main__":
    sys.exit(main())
