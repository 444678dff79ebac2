"""The code hash changes with behaviour and only with behaviour."""

from __future__ import annotations

import ast
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from audit_examples import BASE_SOURCE, ModuleLoader, changed, workflow_hash, write_module

from durableflow.audit import HASH_VERSION, _source, compute_code_hash, hash_functions
from durableflow.engine.registry import Registry, WorkflowDefinition

REFORMATTED_SOURCE = """
from durableflow import Flow, FlowContext
flow = Flow(database_url="postgresql://audit@127.0.0.1/unused")
LIMIT = (10)
@flow.step(retries = 2)
async def double(ctx: FlowContext, x: int) -> int: return x*2
@flow.step(
)
async def fetch(ctx: FlowContext,
                x: int,) -> int:
    return (await double(ctx, x)) + 1
@flow.workflow(name='ingest',
               version=1)
async def ingest(ctx: FlowContext, n: int) -> int:
    total = 0
    for i in range(
        min(n, LIMIT),
    ):
        if (i % 2 == 0):
            total += await fetch(ctx, i)
    return total
"""

SAME_BEHAVIOUR = {
    "reformatted": REFORMATTED_SOURCE,
    "comments": changed(
        BASE_SOURCE, "    total = 0\n", "    # start from zero\n    total = 0  # sum\n"
    ),
    "docstring changed": changed(BASE_SOURCE, "Add up the fetched values.", "Something else."),
    "docstring removed": changed(BASE_SOURCE, '    """Add up the fetched values."""\n', ""),
    "docstring added to a step": changed(
        BASE_SOURCE, "    return x * 2", '    """Twice x."""\n    return x * 2'
    ),
    "unrelated function added": BASE_SOURCE + "\n\ndef unrelated():\n    return 42\n",
    "unrelated constant added": changed(BASE_SOURCE, "LIMIT = 10\n", "LIMIT = 10\nOTHER = 3\n"),
    "version bumped only": changed(BASE_SOURCE, "version=1", "version=2"),
    "python function renamed": changed(
        BASE_SOURCE, "async def ingest(", "async def ingest_workflow("
    ),
    "step backoff changed": changed(BASE_SOURCE, "@flow.step()", "@flow.step(backoff=2.0)"),
}

CHANGED_BEHAVIOUR = {
    "constant in the body": changed(BASE_SOURCE, "total = 0", "total = 1"),
    "module constant": changed(BASE_SOURCE, "LIMIT = 10", "LIMIT = 11"),
    "call": changed(BASE_SOURCE, "min(n, LIMIT)", "max(n, LIMIT)"),
    "branch condition": changed(BASE_SOURCE, "i % 2 == 0", "i % 2 == 1"),
    "branch added": changed(
        BASE_SOURCE,
        "            total += await fetch(ctx, i)\n",
        "            total += await fetch(ctx, i)\n        else:\n            total -= 1\n",
    ),
    "statements reordered": changed(
        BASE_SOURCE, "    return await double(ctx, x) + 1", "    return 1 + await double(ctx, x)"
    ),
    "step body": changed(BASE_SOURCE, "await double(ctx, x) + 1", "await double(ctx, x) + 2"),
    "step called by a step": changed(BASE_SOURCE, "x * 2", "x * 3"),
    "step retries": changed(BASE_SOURCE, "@flow.step(retries=2)", "@flow.step(retries=3)"),
    "step registered name": changed(BASE_SOURCE, "@flow.step()", '@flow.step(name="fetch2")'),
    "input annotation": changed(
        BASE_SOURCE, "ctx: FlowContext, n: int)", "ctx: FlowContext, n: float)"
    ),
    "local name": BASE_SOURCE.replace("total", "acc"),
}


def test_hash_is_a_sha256_hex_digest(load_module: ModuleLoader) -> None:
    digest = workflow_hash(load_module(BASE_SOURCE))
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")


def test_same_source_under_another_module_name_hashes_the_same(load_module: ModuleLoader) -> None:
    assert workflow_hash(load_module(BASE_SOURCE)) == workflow_hash(load_module(BASE_SOURCE))


@pytest.mark.parametrize("variant", sorted(SAME_BEHAVIOUR))
def test_changes_without_behaviour_keep_the_hash(load_module: ModuleLoader, variant: str) -> None:
    base = workflow_hash(load_module(BASE_SOURCE))
    other = load_module(SAME_BEHAVIOUR[variant])
    version = 2 if variant == "version bumped only" else 1
    assert workflow_hash(other, version=version) == base


@pytest.mark.parametrize("variant", sorted(CHANGED_BEHAVIOUR))
def test_changes_of_behaviour_change_the_hash(load_module: ModuleLoader, variant: str) -> None:
    base = workflow_hash(load_module(BASE_SOURCE))
    assert workflow_hash(load_module(CHANGED_BEHAVIOUR[variant])) != base


def test_workflow_name_is_not_part_of_the_hash(load_module: ModuleLoader) -> None:
    base = workflow_hash(load_module(BASE_SOURCE))
    renamed = load_module(changed(BASE_SOURCE, 'name="ingest"', 'name="ingest_pages"'))
    assert workflow_hash(renamed, "ingest_pages") == base


HELPERS_SOURCE = """
import functools

from pydantic import BaseModel

from durableflow import Flow, FlowContext

flow = Flow(database_url="postgresql://audit@127.0.0.1/unused")


class Page(BaseModel):
    url: str
    size: int = 0


@flow.step()
async def fetch(ctx: FlowContext, url: str) -> Page:
    return Page(url=url)


@functools.cache
def batch_size() -> int:
    return 100


async def fetch_all(ctx: FlowContext, urls: list[str]) -> list[Page]:
    return [await fetch(ctx, url) for url in urls[: batch_size()]]


@flow.workflow(name="pages", version=1)
async def pages(ctx: FlowContext, urls: list[str]) -> int:
    found = await fetch_all(ctx, urls)
    return len(found)
"""


def test_plain_helpers_and_models_of_the_module_count(load_module: ModuleLoader) -> None:
    base = workflow_hash(load_module(HELPERS_SOURCE), "pages")
    helper_changed = changed(HELPERS_SOURCE, "for url in urls[", "for url in urls[1")
    cached_helper_changed = changed(HELPERS_SOURCE, "return 100", "return 50")
    step_behind_helper = changed(HELPERS_SOURCE, "Page(url=url)", "Page(url=url, size=1)")
    model_changed = changed(HELPERS_SOURCE, "size: int = 0", "size: int = 1")
    for variant in (helper_changed, cached_helper_changed, step_behind_helper, model_changed):
        assert workflow_hash(load_module(variant), "pages") != base


def test_steps_of_another_module_in_the_package_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package_name = f"audit_pkg_{uuid.uuid4().hex[:8]}"
    package = tmp_path / package_name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "app.py").write_text(
        'from durableflow import Flow\nflow = Flow(database_url="postgresql://a@h/d")\n'
    )
    steps_file = package / "steps.py"
    steps_file.write_text(
        textwrap.dedent(
            f"""
            from {package_name}.app import flow

            @flow.step()
            async def fetch(ctx, x):
                return x + 1
            """
        )
    )
    (package / "flows.py").write_text(
        textwrap.dedent(
            f"""
            from {package_name} import steps
            from {package_name}.app import flow
            from {package_name}.steps import fetch

            @flow.workflow(name="direct", version=1)
            async def direct(ctx, x):
                return await fetch(ctx, x)

            @flow.workflow(name="dotted", version=1)
            async def dotted(ctx, x):
                return await steps.fetch(ctx, x)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)

    def hashes() -> list[str]:
        for name in [m for m in sys.modules if m.split(".")[0] == package_name]:
            del sys.modules[name]
        importlib.import_module(f"{package_name}.flows")
        registry = importlib.import_module(f"{package_name}.app").flow.registry
        return [compute_code_hash(registry.workflow(n), registry) for n in ("direct", "dotted")]

    try:
        before = hashes()
        steps_file.write_text(steps_file.read_text().replace("x + 1", "x + 20"))
        after = hashes()
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == package_name]:
            del sys.modules[name]
    assert before[0] != after[0], "a step imported by name from a sibling module counts"
    assert before[1] != after[1], "a step reached as module.attribute counts"


def test_closure_values_of_a_workflow_factory_count(load_module: ModuleLoader) -> None:
    source = """
    from durableflow import Flow

    flow = Flow(database_url="postgresql://audit@127.0.0.1/unused")

    def make(name, factor):
        @flow.workflow(name=name, version=1)
        async def scaled(ctx, n: int) -> int:
            return n * factor
        return scaled

    make("twice", 2)
    make("thrice", 3)
    make("also_twice", 2)
    """
    module = load_module(source)
    assert workflow_hash(module, "twice") != workflow_hash(module, "thrice")
    assert workflow_hash(module, "twice") == workflow_hash(module, "also_twice")


def test_hash_does_not_depend_on_pythonhashseed(tmp_path: Path) -> None:
    source = changed(
        BASE_SOURCE,
        "LIMIT = 10\n",
        'LIMIT = 10\nTAGS = frozenset({"alpha", "beta", "gamma", "delta"})\n',
    )
    source = changed(source, "    total = 0\n", "    total = len(TAGS) + len({'x', 'y', 'z'})\n")
    name, path = write_module(tmp_path, source)
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location({name!r}, {str(path)!r})
        module = importlib.util.module_from_spec(spec)
        sys.modules[{name!r}] = module
        spec.loader.exec_module(module)
        from durableflow.audit import compute_code_hash
        registry = module.flow.registry
        print(compute_code_hash(registry.workflow("ingest"), registry))
        """
    )
    results = set()
    for seed in ("0", "4242"):
        environment = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env=environment,
            cwd=tmp_path,
        )
        results.add(result.stdout.strip())
    assert len(results) == 1
    assert len(results.pop()) == 64


def test_functions_without_source_still_hash_deterministically() -> None:
    def build(body: str) -> tuple[WorkflowDefinition, Registry]:
        namespace: dict[str, object] = {}
        exec(f"async def generated(ctx, n):\n    return n {body}\n", namespace)
        registry = Registry()
        definition = WorkflowDefinition.from_function(
            namespace["generated"],  # type: ignore[arg-type]
            name="generated",
            version=1,
        )
        registry.add_workflow(definition)
        return definition, registry

    first = compute_code_hash(*build("+ 1"))
    assert compute_code_hash(*build("+ 1")) == first
    assert compute_code_hash(*build("+ 2")) != first


def test_graph_seam_hashes_structure_and_handlers(load_module: ModuleLoader) -> None:
    module = load_module(BASE_SOURCE)
    registry = module.flow.registry
    handlers = {"start": module.ingest, "finish": module.fetch}
    structure = {"initial": "start", "transitions": [["start", "finish"]]}
    base = hash_functions("graph", handlers, registry, structure=structure)
    reordered_keys = {"transitions": [["start", "finish"]], "initial": "start"}
    assert hash_functions("graph", handlers, registry, structure=reordered_keys) == base
    other_structure = {"initial": "finish", "transitions": [["start", "finish"]]}
    assert hash_functions("graph", handlers, registry, structure=other_structure) != base
    assert hash_functions("workflow", handlers, registry, structure=structure) != base

    definition = registry.workflow("ingest")
    definition.extra["hash_functions"] = handlers
    definition.extra["hash_structure"] = structure
    definition.kind = "graph"
    assert compute_code_hash(definition, registry) == base


def test_hash_version_is_a_positive_int() -> None:
    assert isinstance(HASH_VERSION, int) and HASH_VERSION >= 1


def test_a_hundred_workflows_hash_quickly(load_module: ModuleLoader) -> None:
    parts = ['from durableflow import Flow\nflow = Flow(database_url="postgresql://a@h/d")\n']
    for index in range(100):
        parts.append(
            f"""
@flow.step()
async def step_{index}(ctx, x):
    return x + {index}

@flow.workflow(name="workflow_{index}", version=1)
async def workflow_{index}(ctx, x):
    y = await step_{index}(ctx, x)
    if y > {index}:
        y = await step_{index}(ctx, y)
    return y
"""
        )
    module = load_module("".join(parts))
    _source.clear_caches()
    registry = module.flow.registry
    started = time.perf_counter()
    hashes = {compute_code_hash(d, registry) for d in registry.workflows}
    elapsed = time.perf_counter() - started
    assert len(hashes) == 100
    assert elapsed < 2.0, f"hashing 100 workflows took {elapsed:.2f}s"


RICH_FUNCTION = '''
@flow.workflow(name="x", version=1)
async def wf(ctx, n: list[int] | None = None, *a, k: int = 3, **kw) -> dict[str, int]:
    """Docstring."""
    total = 0
    async with lock as held:
        for i, j in enumerate(n or []):
            if i % 2 == 0 and j > 1.5:
                total += await fetch(ctx, f"{i!r:>{j}} and {j}")
            elif (w := i) > 3:
                continue
            else:
                try:
                    raise ValueError("x") from None
                except* ValueError:
                    pass
    match total:
        case {"a": 1, **rest}:
            pass
        case [1, 2, *others]:
            pass
        case Point(x=0) | None:
            pass
    pair = lambda q, /, r=2: q + r
    return {k: v for k, v in {"a": 1}.items() if v} | {**kw}
'''

CANONICAL_SCRIPT = """
import ast, hashlib, importlib.util, sys
spec = importlib.util.spec_from_file_location("canonical_source", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["canonical_source"] = module
spec.loader.exec_module(module)
node = ast.parse(open(sys.argv[2]).read()).body[0]
print(hashlib.sha256(module.canonical_function_node(node).encode()).hexdigest())
"""


def test_canonical_text_is_the_same_on_other_pythons(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(RICH_FUNCTION)
    node = ast.parse(RICH_FUNCTION).body[0]
    assert isinstance(node, ast.AsyncFunctionDef)
    expected = hashlib.sha256(_source.canonical_function_node(node).encode()).hexdigest()
    compared = []
    for candidate in ("python3.11", "python3.12", "python3.13", "python3.14"):
        executable = shutil.which(candidate)
        if executable is None:
            continue
        result = subprocess.run(
            [executable, "-c", CANONICAL_SCRIPT, _source.__file__, str(sample)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            continue  # a shim without that version installed, or a Python too old
        compared.append(candidate)
        assert result.stdout.strip() == expected, f"{candidate} dumps this function differently"
    if not compared:
        pytest.skip("no other Python 3.11+ interpreter on PATH to compare with")
