"""Example workflow sources and helpers shared by the audit unit tests."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from durableflow.audit import compute_code_hash

ModuleLoader = Callable[..., ModuleType]

# A workflow that reaches a step, which reaches another step, plus a module constant.
BASE_SOURCE = '''
from durableflow import Flow, FlowContext

flow = Flow(database_url="postgresql://audit@127.0.0.1/unused")

LIMIT = 10


@flow.step(retries=2)
async def double(ctx: FlowContext, x: int) -> int:
    return x * 2


@flow.step()
async def fetch(ctx: FlowContext, x: int) -> int:
    return await double(ctx, x) + 1


@flow.workflow(name="ingest", version=1)
async def ingest(ctx: FlowContext, n: int) -> int:
    """Add up the fetched values."""
    total = 0
    for i in range(min(n, LIMIT)):
        if i % 2 == 0:
            total += await fetch(ctx, i)
    return total
'''


def write_module(directory: Path, source: str, name: str | None = None) -> tuple[str, Path]:
    """Write ``source`` as ``<name>.py`` in ``directory``; return the name and the path."""
    name = name or f"audit_example_{uuid.uuid4().hex[:10]}"
    path = directory / f"{name}.py"
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return name, path


def workflow_hash(module: ModuleType, name: str = "ingest", version: int | None = None) -> str:
    """The code hash of workflow ``name`` registered on ``module.flow``."""
    registry = module.flow.registry
    return compute_code_hash(registry.workflow(name, version), registry)


def changed(source: str, old: str, new: str) -> str:
    """``source`` with ``old`` replaced by ``new`` (which must occur exactly once)."""
    assert source.count(old) == 1, f"{old!r} occurs {source.count(old)} times"
    return source.replace(old, new)
