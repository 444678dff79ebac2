"""``durableflow --help`` imports the command line, not the library.

Every command module is imported to build the parser, so a module that imported the
engine (or asyncpg, SQLAlchemy, Starlette...) at its top would make every ``--help``,
and every typo on the command line, pay for all of it: about half a second. Each test
runs a fresh interpreter, where nothing is imported yet.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

import durableflow.audit
import durableflow.storage
from durableflow.cli import audit_cmd, storage_cmd

# Packages `--help` must not import: the drivers, the web stack, pydantic, rich, the
# parts of durableflow that do the work, and asyncio (some 25 ms of the 100 or so left,
# and parsing needs no event loop).
HEAVY = (
    "asyncio",
    "asyncpg",
    "sqlalchemy",
    "alembic",
    "starlette",
    "uvicorn",
    "jinja2",
    "redis",
    "pydantic",
    "pydantic_settings",
    "rich",
    "durableflow.engine",
    "durableflow.runtime",
    "durableflow._store",
    "durableflow.flow",
    "durableflow.surfaces",
    "durableflow.storage",
    "durableflow.audit",
    "durableflow.artefacts",
    "durableflow.config",
    "durableflow.web",
)


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY))


def run_python(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *arguments], capture_output=True, text=True, timeout=60, check=False
    )


def imported_by_importtime(stderr: str) -> set[str]:
    """The modules ``python -X importtime`` reported importing."""
    modules = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name != "imported package":  # the header line
                modules.add(name)
    return modules


def test_durableflow_help_imports_no_heavy_module() -> None:
    """The real entry point, as a user runs it, under ``-X importtime``."""
    result = run_python("-X", "importtime", "-m", "durableflow.cli", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: durableflow" in result.stdout
    modules = imported_by_importtime(result.stderr)
    assert "durableflow.cli.common" in modules  # the check sees what the CLI imports
    assert heavy(modules) == []


HELP_OF_EVERY_COMMAND = textwrap.dedent(
    """
    import argparse, contextlib, io, json, sys
    from durableflow.cli import build_parser, main

    def subcommands(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    commands = [[]]
    for name, parser in subcommands(build_parser()).items():
        commands.append([name])
        commands.extend([name, verb] for verb in subcommands(parser))
    helped = []
    for command in commands:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            try:
                main([*command, "--help"])
            except SystemExit as exit:
                assert exit.code == 0, (command, exit.code)
        assert out.getvalue().startswith("usage: durableflow"), command
        helped.append(" ".join(command))
    print(json.dumps({"helped": helped, "modules": sorted(sys.modules)}))
    """
)


def test_help_of_every_command_and_verb_imports_no_heavy_module() -> None:
    result = run_python("-c", HELP_OF_EVERY_COMMAND)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"", "worker", "db upgrade", "ui", "demo", "runs show", "storage watch"} <= set(
        report["helped"]
    )
    modules = set(report["modules"])
    assert heavy(modules) == []
    # Only the standard library besides durableflow's errors and command line (and what
    # the interpreter had loaded before: site hooks).
    before = set(json.loads(run_python("-c", PRELOADED).stdout))
    outside = {
        m
        for m in modules - before
        if m.split(".")[0] not in sys.stdlib_module_names
        and not (m in ("durableflow", "durableflow.errors") or m.startswith("durableflow.cli"))
    }
    assert outside == set()


PRELOADED = "import json, sys; print(json.dumps(sorted(sys.modules)))"


def test_a_command_that_runs_imports_what_it_needs() -> None:
    """The other side: the handlers import the library themselves (here ``db sql``,
    which needs no database)."""
    code = textwrap.dedent(
        """
        import contextlib, io, json, sys
        from durableflow.cli import main
        with contextlib.redirect_stdout(io.StringIO()) as out:
            code = main(["db", "sql"])
        assert code == 0 and "CREATE TABLE" in out.getvalue(), (code, out.getvalue()[:200])
        print(json.dumps(sorted(sys.modules)))
        """
    )
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert "durableflow.flow" in json.loads(result.stdout)


@pytest.mark.parametrize(
    ("written_out", "defined"),
    [
        (audit_cmd.MANIFEST_FILENAME, durableflow.audit.MANIFEST_FILENAME),
        (storage_cmd.DEFAULT_EVENT_CHANNEL, durableflow.storage.DEFAULT_EVENT_CHANNEL),
    ],
)
def test_defaults_the_help_names_are_the_library_s(written_out: str, defined: str) -> None:
    """The help texts name defaults the CLI writes out instead of importing them."""
    assert written_out == defined
