"""The docs keep up with the code: every public name, setting, log event and command.

Each check is a function returning what the docs lack, so that each test also proves
its check can fail: the same check on the page with one name removed must report
that name. `make docs` runs this file.
"""

from __future__ import annotations

import argparse
import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import durableflow
from durableflow import Flow
from durableflow.cli import build_parser
from durableflow.config import FlowSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "durableflow"
EVENT_TABLE_PAGE = DOCS / "observability.md"

# Events whose name is built at run time, with every name they can take. An f-string
# event not listed here fails test_every_logged_event_is_in_the_table: add its names.
EVENT_FAMILIES = {
    # runtime/executor.py, RunExecutor._record: the outcome of a run it executed.
    "run_{status}": ("run_succeeded", "run_failed", "run_cancelled"),
}


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def code_spans(text: str) -> list[str]:
    """The contents of the `inline code` spans of a Markdown text."""
    return re.findall(r"`([^`\n]+)`", text)


def identifiers(text: str) -> set[str]:
    return {word for span in code_spans(text) for word in re.findall(r"[A-Za-z_]\w*", span)}


def without(text: str, name: str) -> str:
    """``text`` with every whole-word occurrence of ``name`` removed."""
    return re.sub(rf"(?<!\w){re.escape(name)}(?!\w)", "", text)


# -- the public API ----------------------------------------------------------------


def public_flow_members() -> list[str]:
    flow = Flow(database_url="postgresql://docs@127.0.0.1:9/docs")  # no I/O: nothing connects
    names = {name for name in dir(Flow) if not name.startswith("_")}
    names |= {name for name in vars(flow) if not name.startswith("_")}
    return sorted(names)


def missing_api_names(api: str) -> list[str]:
    named = identifiers(api)
    return [name for name in durableflow.__all__ if name not in named]


def missing_flow_members(api: str) -> list[str]:
    return [name for name in public_flow_members() if not re.search(rf"flow\.{name}(?!\w)", api)]


def test_api_page_names_every_public_name() -> None:
    api = page("api.md")
    assert missing_api_names(api) == []
    assert missing_api_names(without(api, "QueueInfo")) == ["QueueInfo"]


def test_api_page_names_every_public_flow_member() -> None:
    api = page("api.md")
    members = public_flow_members()
    assert {"start", "replay", "registry", "settings", "storage"} <= set(members)
    assert missing_flow_members(api) == []
    assert missing_flow_members(without(api, "flow.list_queues")) == ["list_queues"]


# -- settings --------------------------------------------------------------------


def missing_settings(configuration: str) -> list[str]:
    rows = [line for line in configuration.splitlines() if line.startswith("|")]
    missing = []
    for field in FlowSettings.model_fields:
        variable = f"DURABLEFLOW_{field.upper()}"
        if not any(f"`{field}`" in row and f"`{variable}`" in row for row in rows):
            missing.append(field)
    return missing


def test_configuration_page_has_every_setting_with_its_variable() -> None:
    configuration = page("configuration.md")
    assert len(FlowSettings.model_fields) > 20
    assert missing_settings(configuration) == []
    assert missing_settings(without(configuration, "DURABLEFLOW_LEASE_TTL")) == ["lease_ttl"]


# -- log events ------------------------------------------------------------------


def _event_values(tree: ast.AST) -> Iterator[ast.expr]:
    """The value of every ``"event"`` key of a dict literal or ``dict(event=...)``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "event":
                    yield value
        elif isinstance(node, ast.Call) and ast.unparse(node.func) == "dict":
            yield from (kw.value for kw in node.keywords if kw.arg == "event")


def logged_events() -> dict[str, list[str]]:
    """Every event name the package logs, with the files that log it."""
    events: dict[str, list[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for value in _event_values(tree):
            where = f"{path.relative_to(ROOT)}:{value.lineno}"
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                names: tuple[str, ...] = (value.value,)
            elif isinstance(value, ast.JoinedStr):
                family = "".join(
                    str(part.value)
                    if isinstance(part, ast.Constant)
                    else "{" + ast.unparse(part.value) + "}"
                    for part in value.values
                    if isinstance(part, ast.Constant | ast.FormattedValue)
                )
                assert family in EVENT_FAMILIES, (
                    f"{where}: event {family!r} is built at run time; list the names it "
                    "can take in EVENT_FAMILIES (tests/unit/test_docs.py) and in the table"
                )
                names = EVENT_FAMILIES[family]
            else:
                continue  # e.g. the JSON formatter copying record.event: not a name
            for name in names:
                events.setdefault(name, []).append(where)
    return events


def event_table_names(text: str) -> set[str]:
    """The event names in the first column of the tables of the "Log events" section."""
    section = text.split("\n## Log events", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if line.startswith("|") and len(cells) > 2:
            names |= set(re.findall(r"`([a-z_.]+)`", cells[1]))
    return names


def test_every_logged_event_is_in_the_table_and_every_listed_event_is_logged() -> None:
    events = logged_events()
    assert {"run_dead", "leader_elected", "run_succeeded", "storage.event_dropped"} <= set(events)
    table = event_table_names(EVENT_TABLE_PAGE.read_text(encoding="utf-8"))
    undocumented = {name: where for name, where in events.items() if name not in table}
    assert undocumented == {}, f"add these events to {EVENT_TABLE_PAGE.name}#log-events"
    assert sorted(table - set(events)) == [], "listed events nothing logs any more"
    shorter = event_table_names(without(EVENT_TABLE_PAGE.read_text(encoding="utf-8"), "run_dead"))
    assert "run_dead" in events and "run_dead" not in shorter


def test_other_pages_link_to_the_event_table_instead_of_copying_it() -> None:
    for path in sorted(DOCS.glob("*.md")):
        if path != EVENT_TABLE_PAGE:
            assert "\n## Log events" not in path.read_text(encoding="utf-8") or (
                not event_table_names(path.read_text(encoding="utf-8"))
            ), f"{path.name} has an event table of its own; link to {EVENT_TABLE_PAGE.name}"


# -- the command line --------------------------------------------------------------


def cli_commands() -> list[tuple[str, ...]]:
    """``(command,)`` for each top-level command, ``(noun, verb)`` for each verb."""
    commands: list[tuple[str, ...]] = []

    def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                return dict(action.choices)
        return {}

    for name, parser in subcommands(build_parser()).items():
        commands.append((name,))
        commands.extend((name, verb) for verb in subcommands(parser))
    return commands


def missing_commands(text: str) -> list[str]:
    spans = code_spans(text)
    missing = []
    for command in cli_commands():
        pattern = r"\b" + r"\b.*\b".join(map(re.escape, command)) + r"\b"
        if not any(re.search(pattern, span) for span in spans):
            missing.append(" ".join(command))
    return missing


def test_every_command_is_described() -> None:
    text = page("cli.md") + page("operations.md")
    commands = cli_commands()
    assert ("worker",) in commands and ("schedules", "backfill") in commands
    assert missing_commands(text) == []
    assert "schedules backfill" in missing_commands(without(text, "backfill"))


# -- links -------------------------------------------------------------------------


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def slugs(text: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown page."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", strip_code_blocks(text), flags=re.MULTILINE):
        heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        candidate, number = slug, 0
        while candidate in found:
            number += 1
            candidate = f"{slug}-{number}"
        found.add(candidate)
    return found


def strip_code_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)


def broken_links(pages: dict[Path, str]) -> list[str]:
    broken = []
    for path, text in pages.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", strip_code_blocks(text)):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{path.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md":
                text_of_linked = pages.get(linked) or linked.read_text(encoding="utf-8")
                if anchor not in slugs(text_of_linked):
                    broken.append(f"{path.name}: {target} (no such heading)")
    return broken


def test_local_links_and_anchors_resolve() -> None:
    pages = {path: path.read_text(encoding="utf-8") for path in markdown_pages()}
    assert broken_links(pages) == []
    cli = DOCS / "cli.md"
    changed = {**pages, cli: pages[cli].replace("## Exit status", "## Exit codes")}
    assert any("cli.md#exit-status" in problem for problem in broken_links(changed))


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("`durableflow worker app.module:flow`", "durableflow-worker-appmoduleflow"),
        (
            "`durableflow db upgrade | check | current | sql`",
            "durableflow-db-upgrade--check--current--sql",
        ),
        ("Fencing: the epoch", "fencing-the-epoch"),
    ],
)
def test_anchors_are_the_ones_github_makes(heading: str, slug: str) -> None:
    assert slug in slugs(f"# {heading}\n")
