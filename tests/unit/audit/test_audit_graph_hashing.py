"""A graph's code hash changes with its structure, handlers and guards, and only with them."""

from __future__ import annotations

import pytest
from audit_examples import ModuleLoader, changed

from durableflow.audit import (
    HASH_FUNCTIONS_KEY,
    HASH_STRUCTURE_KEY,
    compute_code_hash,
    compute_graph_hash,
    graph_hash_extra,
)
from durableflow.engine.registry import WorkflowDefinition
from durableflow.graph import Graph

GRAPH_SOURCE = '''
from durableflow import Flow, Graph

flow = Flow(database_url="postgresql://audit@127.0.0.1/unused")

LIMIT = 1000


@flow.step(retries=2)
async def send_email(ctx, address):
    return f"sent to {address}"


def is_large(payload):
    return payload.get("amount", 0) > LIMIT


g = Graph(name="user.onboarding", version=1, initial="email_pending")


@g.state("email_pending", manual=True)
async def email_pending(ctx, payload):
    """Send the verification email, then wait."""
    await send_email(ctx, payload["email"])
    return payload


@g.state("review", retries=1, timeout=30)
async def review(ctx, payload):
    return {**payload, "reviewed": True}


@g.state("verified", terminal=True)
async def verified(ctx, payload):
    return payload


@g.state("rejected", terminal=True)
async def rejected(ctx, payload):
    return payload


g.transition("email_pending", "review", when=is_large)
g.transition("email_pending", "verified", when=lambda payload: payload.get("code") == "ok")
g.transition("email_pending", "rejected")
g.transition("review", "verified", when={"field": "reviewed", "equals": True})
g.transition("review", "rejected")
'''

TO_REVIEW = 'g.transition("email_pending", "review", when=is_large)'
TO_VERIFIED = (
    'g.transition("email_pending", "verified", when=lambda payload: payload.get("code") == "ok")'
)

SAME_BEHAVIOUR = {
    "comments and spacing": changed(
        GRAPH_SOURCE,
        '    return {**payload, "reviewed": True}\n',
        '    # mark it\n    return {**payload,   "reviewed": True}  # done\n',
    ),
    "handler docstring": changed(GRAPH_SOURCE, "Send the verification email, then wait.", "Other."),
    "graph version bumped": changed(GRAPH_SOURCE, "version=1", "version=2"),
    "python handler renamed": changed(
        GRAPH_SOURCE, "async def review(ctx, payload):", "async def review_it(ctx, payload):"
    ),
    "condition keys reordered": changed(
        GRAPH_SOURCE,
        '{"field": "reviewed", "equals": True}',
        '{"equals": True, "field": "reviewed"}',
    ),
    "unrelated function added": GRAPH_SOURCE + "\n\ndef unrelated():\n    return 1\n",
}

CHANGED_BEHAVIOUR = {
    "handler body": changed(GRAPH_SOURCE, '"reviewed": True}', '"reviewed": False}'),
    "step reached by a handler": changed(GRAPH_SOURCE, 'f"sent to {address}"', 'f"to {address}"'),
    "step retries": changed(GRAPH_SOURCE, "@flow.step(retries=2)", "@flow.step(retries=3)"),
    "guard function body": changed(
        GRAPH_SOURCE, '.get("amount", 0) > LIMIT', '.get("amount", 0) >= LIMIT'
    ),
    "constant read by a guard": changed(GRAPH_SOURCE, "LIMIT = 1000", "LIMIT = 100"),
    "lambda guard": changed(GRAPH_SOURCE, '== "ok")', '== "yes")'),
    "condition value": changed(GRAPH_SOURCE, '"equals": True}', '"equals": False}'),
    "transition order": changed(
        GRAPH_SOURCE,
        f"{TO_REVIEW}\n{TO_VERIFIED}\n",
        f"{TO_VERIFIED}\n{TO_REVIEW}\n",
    ),
    "transition target": changed(
        GRAPH_SOURCE, 'g.transition("review", "rejected")', 'g.transition("review", "verified")'
    ),
    "manual flag": changed(
        GRAPH_SOURCE, '@g.state("email_pending", manual=True)', '@g.state("email_pending")'
    ),
    "signal name": changed(
        GRAPH_SOURCE,
        '@g.state("email_pending", manual=True)',
        '@g.state("email_pending", manual=True, signal="verify")',
    ),
    "state retries": changed(GRAPH_SOURCE, "retries=1, timeout=30", "retries=2, timeout=30"),
    "state timeout": changed(GRAPH_SOURCE, "retries=1, timeout=30", "retries=1, timeout=60"),
    "max transitions": changed(
        GRAPH_SOURCE, 'initial="email_pending")', 'initial="email_pending", max_transitions=50)'
    ),
}


def graph_hash(module: object) -> str:
    return compute_graph_hash(module.g, module.flow.registry)  # type: ignore[attr-defined]


@pytest.fixture
def base_hash(load_module: ModuleLoader) -> str:
    return graph_hash(load_module(GRAPH_SOURCE))


def test_the_hash_is_stable(load_module: ModuleLoader, base_hash: str) -> None:
    assert len(base_hash) == 64
    assert graph_hash(load_module(GRAPH_SOURCE)) == base_hash


@pytest.mark.parametrize("case", sorted(SAME_BEHAVIOUR))
def test_changes_without_behaviour_keep_the_hash(
    load_module: ModuleLoader, base_hash: str, case: str
) -> None:
    assert graph_hash(load_module(SAME_BEHAVIOUR[case])) == base_hash


@pytest.mark.parametrize("case", sorted(CHANGED_BEHAVIOUR))
def test_changes_of_behaviour_change_the_hash(
    load_module: ModuleLoader, base_hash: str, case: str
) -> None:
    assert graph_hash(load_module(CHANGED_BEHAVIOUR[case])) != base_hash


def test_the_definition_seam_gives_the_same_hash(load_module: ModuleLoader) -> None:
    module = load_module(GRAPH_SOURCE)
    registry = module.flow.registry

    async def runner(ctx: object, payload: object) -> object:  # stands in for the engine's
        return payload

    definition = WorkflowDefinition.from_function(runner, name="user.onboarding", version=1)
    definition.kind = "graph"
    definition.extra.update(graph_hash_extra(module.g))
    assert set(definition.extra) == {HASH_FUNCTIONS_KEY, HASH_STRUCTURE_KEY}
    assert compute_code_hash(definition, registry) == compute_graph_hash(module.g, registry)


def test_a_graph_without_handlers_hashes_its_structure_not_the_runner(
    load_module: ModuleLoader,
) -> None:
    module = load_module(GRAPH_SOURCE)
    registry = module.flow.registry

    def plain(target: str) -> Graph:
        g = Graph("plain", 1, "a")
        g.add_state("a", manual=True)
        g.add_state(target, terminal=True)
        g.transition("a", target)
        return g

    async def runner(ctx: object, payload: object) -> object:
        return payload

    hashes = set()
    for target in ("b", "c"):
        definition = WorkflowDefinition.from_function(runner, name="plain", version=1)
        definition.kind = "graph"
        definition.extra.update(graph_hash_extra(plain(target)))
        hashes.add(compute_code_hash(definition, registry))
    assert len(hashes) == 2


def test_spec_graphs_hash_their_actions_bodies(load_module: ModuleLoader) -> None:
    source = """
from durableflow import Flow

flow = Flow(database_url="postgresql://audit@127.0.0.1/unused")


@flow.step()
async def send_email(ctx, payload):
    return {**payload, "sent": True}
"""
    spec = {
        "name": "tenant.flow",
        "version": 1,
        "initial": "a",
        "states": [
            {"name": "a", "action": "send_email", "manual": True},
            {"name": "b", "terminal": True},
        ],
        "transitions": [{"from": "a", "to": "b", "when": {"field": "sent", "exists": True}}],
    }

    def spec_hash_of(module_source: str) -> str:
        module = load_module(module_source)
        g = Graph.from_spec(spec, actions={"send_email": module.send_email})
        return compute_graph_hash(g, module.flow.registry)

    base = spec_hash_of(source)
    assert spec_hash_of(source) == base
    assert spec_hash_of(changed(source, '"sent": True', '"sent": False')) != base
