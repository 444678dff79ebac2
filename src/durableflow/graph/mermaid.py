"""A graph as a Mermaid ``stateDiagram-v2``: what ``durableflow graph show`` prints.

States get short ids (``s0``, ``s1`` ... in declaration order) and their names as
labels, so any name draws, whatever characters it holds. Manual states carry the
class ``manual`` and a line saying which signal they wait for, terminal states the
class ``terminal`` and an arrow to the end marker, and the ``current`` state (a run's
position) the class ``current``. A transition is labelled with its guard: the
condition's text, ``when <function name>`` for a Python guard, ``otherwise`` for a
state's unguarded fallback, numbered when a state has several guards (the order they
are tried in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from durableflow.errors import GraphError, GraphProblem
from durableflow.graph.conditions import Condition

if TYPE_CHECKING:
    from durableflow.graph.model import Graph, Transition

CLASS_STYLES = {
    "manual": "fill:#fff4d6,stroke:#b7791f,stroke-width:2px",
    "terminal": "fill:#e3f4e8,stroke:#2f855a,stroke-width:2px",
    "current": "fill:#dbeafe,stroke:#1d4ed8,stroke-width:4px",
}

# Characters Mermaid reads as syntax inside labels, written as its entity codes: '#'
# starts a code, ';' ends a statement, '<' and '>' would be HTML, '%%' starts a comment
# or an %%{init: ...}%% directive (which would restyle or reconfigure the diagram). A
# double quote only ends the quoted name of a state; elsewhere it stays readable.
_ENTITIES = {"#": "#35;", ";": "#59;", "<": "#lt;", ">": "#gt;", "%": "#37;"}
_QUOTED_ENTITIES = {**_ENTITIES, '"': "#quot;"}


def to_mermaid(graph: Graph, *, current: str | None = None) -> str:
    """The Mermaid text of ``graph``; ``current`` (a state name) is highlighted."""
    ids: dict[str, str] = {}
    for name in graph.states:
        ids[name] = f"s{len(ids)}"
    for transition in graph.transitions:  # an unvalidated graph may name undeclared states
        for end in (transition.source, transition.target):
            ids.setdefault(end, f"s{len(ids)}")
    if current is not None and current not in graph.states:
        raise GraphError(
            graph.name,
            [GraphProblem("cannot highlight a state the graph does not declare", state=current)],
        )
    lines = ["stateDiagram-v2"]
    lines += [
        f'    state "{label_text(name, quoted=True)}" as {state_id}'
        for name, state_id in ids.items()
    ]
    for name, state in graph.states.items():
        if state.manual:
            lines.append(f"    {ids[name]} : manual, waits for signal {label_text(state.signal)}")
    if graph.initial in ids:
        lines.append(f"    [*] --> {ids[graph.initial]}")
    for transition in graph.transitions:
        label = transition_label(graph, transition)
        arrow = f"    {ids[transition.source]} --> {ids[transition.target]}"
        lines.append(f"{arrow} : {label_text(label)}" if label else arrow)
    for name, state in graph.states.items():
        if state.terminal:
            lines.append(f"    {ids[name]} --> [*]")
    lines += [f"    classDef {name} {style}" for name, style in CLASS_STYLES.items()]
    for name, state in graph.states.items():
        if state.manual:
            lines.append(f"    class {ids[name]} manual")
        if state.terminal:
            lines.append(f"    class {ids[name]} terminal")
    if current is not None:
        lines.append(f"    class {ids[current]} current")
    return "\n".join(lines) + "\n"


def transition_label(graph: Graph, transition: Transition) -> str:
    """The readable guard of a transition ("" for a state's only, unguarded, way out)."""
    outgoing = graph.outgoing(transition.source)
    guarded = [t for t in outgoing if t.when is not None]
    if transition.when is None:
        return "otherwise" if guarded else ""
    if isinstance(transition.when, Condition):
        text = transition.when.describe()
    else:
        name = getattr(transition.when, "__name__", type(transition.when).__name__)
        text = "when guard" if name == "<lambda>" else f"when {name}"
    if len(guarded) > 1:
        return f"{guarded.index(transition) + 1}. {text}"
    return text


def label_text(text: str, *, quoted: bool = False) -> str:
    """``text`` made safe in a Mermaid label (``quoted``: between double quotes)."""
    entities = _QUOTED_ENTITIES if quoted else _ENTITIES
    return "".join(
        " " if ord(character) < 32 or ord(character) == 127 else entities.get(character, character)
        for character in text
    )
