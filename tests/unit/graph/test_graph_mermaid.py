"""Mermaid output: a structural reading that runs everywhere, and the real Mermaid parser."""

from __future__ import annotations

import html
import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from graph_examples import ACTIONS, onboarding, onboarding_spec, passthrough, review

import _mermaid
from durableflow import Graph, GraphError

# Mermaid obeys an init directive anywhere in the text, inside a quoted label too.
DIRECTIVE = "%%{init: {'theme': 'dark', 'themeVariables': {'primaryColor': 'red'}}}%%"

# Names and values with every character Mermaid reads as syntax somewhere.
AWKWARD_NAMES = [
    'say "hi"; then #wait',
    "a --> b",
    "[*]",
    "<b>bold</b> & co",
    "state",
    "x: y %% z",
    DIRECTIVE,
    "café ✓ {braces} (parens)",
]


def awkward() -> Graph:
    g = Graph(name="awkward", version=1, initial=AWKWARD_NAMES[0])
    first, *middle, last = AWKWARD_NAMES
    g.add_state(first, passthrough, manual=True, signal='go; now "please"')
    for name in middle:
        g.add_state(name, passthrough)
    g.add_state(last, passthrough, terminal=True)
    chain = [first, *middle, last]
    for source, target in itertools.pairwise(chain):
        g.transition(source, target, when={"field": "k;#", "equals": 'v "<x>"'})
        g.transition(source, last)
    return g


@dataclass
class Diagram:
    """What a Mermaid stateDiagram-v2 in our subset says, read line by line."""

    labels: dict[str, str] = field(default_factory=dict)  # id -> state name
    notes: dict[str, list[str]] = field(default_factory=dict)
    starts: list[str] = field(default_factory=list)
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)
    class_defs: dict[str, str] = field(default_factory=dict)
    classes: dict[str, list[str]] = field(default_factory=dict)

    def named(self, state_id: str) -> str:
        return self.labels[state_id]


def unescape(text: str) -> str:
    """Our entity codes (``#35;``, ``#quot;``) back to characters."""
    text = re.sub(r"#(\d+);", lambda m: chr(int(m.group(1))), text)
    return re.sub(r"#(\w+);", lambda m: html.unescape(f"&{m.group(1)};"), text)


# Label text: Mermaid's syntax characters (# ; < >, and " in a quoted name) appear
# only as entity codes.
TEXT = r"((?:#\w+;|[^#;<>\n])+)"
QUOTED_TEXT = r"((?:#\w+;|[^#\";<>\n])+)"
STATEMENTS = [
    (re.compile(rf'^    state "{QUOTED_TEXT}" as (s\d+)$'), "label"),
    (re.compile(rf"^    (s\d+) : {TEXT}$"), "note"),
    (re.compile(r"^    \[\*\] --> (s\d+)$"), "start"),
    (re.compile(rf"^    (s\d+) --> (s\d+)(?: : {TEXT})?$"), "edge"),
    (re.compile(r"^    (s\d+) --> \[\*\]$"), "end"),
    (re.compile(r"^    classDef (\w+) ([\w#:,.-]+)$"), "class_def"),
    (re.compile(r"^    class (s\d+) (\w+)$"), "class"),
]


def read(text: str) -> Diagram:
    """Read our Mermaid text strictly: every line must be one statement form we emit."""
    lines = text.splitlines()
    assert lines[0] == "stateDiagram-v2"
    assert text.endswith("\n")
    diagram = Diagram()
    for line in lines[1:]:
        found = [(kind, m) for pattern, kind in STATEMENTS if (m := pattern.match(line))]
        assert len(found) == 1, f"not one statement of ours: {line!r}"
        kind, match = found[0]
        groups = match.groups()
        if kind == "label":
            assert groups[1] not in diagram.labels, f"{groups[1]} declared twice"
            diagram.labels[groups[1]] = unescape(groups[0])
        elif kind == "note":
            diagram.notes.setdefault(groups[0], []).append(unescape(groups[1]))
        elif kind == "start":
            diagram.starts.append(groups[0])
        elif kind == "edge":
            diagram.edges.append((groups[0], groups[1], unescape(groups[2] or "")))
        elif kind == "end":
            diagram.ends.append(groups[0])
        elif kind == "class_def":
            diagram.class_defs[groups[0]] = groups[1]
        else:
            diagram.classes.setdefault(groups[0], []).append(groups[1])
    return diagram


def check_against_graph(g: Graph, diagram: Diagram, current: str | None) -> None:
    """The diagram says exactly what the graph says."""
    ids = {name: state_id for state_id, name in diagram.labels.items()}
    assert set(ids) == set(g.states)
    assert diagram.starts == [ids[g.initial]]
    assert [(diagram.named(a), diagram.named(b)) for a, b, _ in diagram.edges] == [
        (t.source, t.target) for t in g.transitions
    ]
    assert sorted(diagram.named(s) for s in diagram.ends) == sorted(
        name for name, state in g.states.items() if state.terminal
    )
    for name, state in g.states.items():
        marks = diagram.classes.get(ids[name], [])
        assert ("manual" in marks) is state.manual, name
        assert ("terminal" in marks) is state.terminal, name
        assert ("current" in marks) is (name == current), name
        if state.manual:
            assert diagram.notes[ids[name]] == [f"manual, waits for signal {state.signal}"]
    assert set(diagram.class_defs) == {"manual", "terminal", "current"}


EXAMPLES = {
    "onboarding": (onboarding, "email_pending"),
    "review": (review, "changes_requested"),
    "spec": (lambda: Graph.from_spec(onboarding_spec(), actions=ACTIONS), None),
    "awkward": (awkward, AWKWARD_NAMES[3]),
}


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_the_diagram_says_what_the_graph_says(example: str) -> None:
    build, current = EXAMPLES[example]
    g = build()
    check_against_graph(g, read(g.to_mermaid(current=current)), current)
    check_against_graph(g, read(g.to_mermaid()), None)


def test_guards_are_labelled_in_the_order_they_are_tried() -> None:
    diagram = read(review().to_mermaid())
    labels = {(diagram.named(a), diagram.named(b)): label for a, b, label in diagram.edges}
    assert labels == {
        ("draft", "review"): "",
        ("review", "escalated"): "1. when is_large",
        ("review", "published"): '2. verdict = "approve"',
        ("review", "rejected"): '3. verdict in ["reject","spam"]',
        ("review", "changes_requested"): "otherwise",
        ("changes_requested", "review"): "",
        ("escalated", "published"): "when guard",
        ("escalated", "rejected"): "otherwise",
    }


def test_the_onboarding_diagram_reads_well() -> None:
    assert onboarding().to_mermaid(current="verified") == (
        "stateDiagram-v2\n"
        '    state "email_pending" as s0\n'
        '    state "verified" as s1\n'
        "    s0 : manual, waits for signal advance\n"
        "    [*] --> s0\n"
        "    s0 --> s1\n"
        "    s1 --> [*]\n"
        "    classDef manual fill:#fff4d6,stroke:#b7791f,stroke-width:2px\n"
        "    classDef terminal fill:#e3f4e8,stroke:#2f855a,stroke-width:2px\n"
        "    classDef current fill:#dbeafe,stroke:#1d4ed8,stroke-width:4px\n"
        "    class s0 manual\n"
        "    class s1 terminal\n"
        "    class s1 current\n"
    )


def test_a_directive_in_a_state_name_is_drawn_as_text_not_obeyed() -> None:
    text = awkward().to_mermaid()
    assert "%%" not in text  # neither a comment nor a directive: "%" is always written #37;
    assert DIRECTIVE in read(text).labels.values()


def test_highlighting_an_unknown_state_is_refused() -> None:
    with pytest.raises(GraphError, match="does not declare") as raised:
        onboarding().to_mermaid(current="nowhere")
    assert raised.value.state == "nowhere"


def test_an_invalid_graph_still_draws() -> None:
    g = Graph("g", 1, "a")
    g.add_state("a", passthrough)
    g.transition("a", "ghost")
    diagram = read(g.to_mermaid())
    assert [(diagram.named(a), diagram.named(b)) for a, b, _ in diagram.edges] == [("a", "ghost")]


BROKEN = "stateDiagram-v2\n    s0 --> --> s1\n"


@pytest.fixture(scope="module")
def parsed() -> dict[str, Any]:
    """The real Mermaid parser's reading of every example and of BROKEN, in one node run."""
    _mermaid.require()
    texts = {
        name: build().to_mermaid(current=current) for name, (build, current) in EXAMPLES.items()
    }
    texts["broken"] = BROKEN
    return dict(zip(texts, _mermaid.parse(list(texts.values())), strict=True))


@pytest.mark.parametrize("example", sorted(EXAMPLES))
def test_the_real_mermaid_parser_reads_back_what_the_graph_says(
    parsed: dict[str, Any], example: str
) -> None:
    build, current = EXAMPLES[example]
    g = build()
    result = parsed[example]
    assert result["ok"], f"{g.name}: {result.get('error')}"
    assert result["type"] == "stateDiagram"
    ours = read(g.to_mermaid(current=current))
    # Mermaid's reading of each state: its label (and note), and its classes.
    states = result["states"]
    for state_id, name in ours.labels.items():
        descriptions = [_mermaid.decode(d) for d in states[state_id]["descriptions"]]
        assert descriptions == [name, *ours.notes.get(state_id, [])]
        assert states[state_id]["classes"] == ours.classes.get(state_id, [])
    # Its reading of each arrow, with the label it will draw.
    relations = [
        (a, b, _mermaid.decode(title))
        for a, b, title in result["relations"]
        if not a.endswith("_start") and not b.endswith("_end")
    ]
    assert relations == ours.edges
    assert set(result["classDefs"]) == {"manual", "terminal", "current"}


def test_the_real_mermaid_parser_rejects_broken_text(parsed: dict[str, Any]) -> None:
    # The checks above can fail: Mermaid refuses what is not a state diagram.
    assert not parsed["broken"]["ok"]
