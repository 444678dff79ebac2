"""The ``code_hash`` of a workflow: a sha256 over its normalised code and what it calls.

What goes in (``HASH_VERSION`` 1):

- the workflow function's normalised AST (see ``_source``): its parameters,
  annotations, defaults, body and any decorator other than the registration one;
- every step registered in the same ``Registry`` that the code reaches by name
  (a module global, a closure variable or ``module.attribute``): the step's body
  plus its registered ``name``, ``retries`` and ``timeout``; followed transitively,
  so a step that calls another step, or a helper that calls a step, counts too;
- every plain function and class that the code names and that is defined in the
  same top-level package as that code (your project's helpers, models), followed
  transitively for functions;
- for a global name bound to plain data (numbers, strings, tuples, lists, dicts,
  sets...), the source text of its top-level ``NAME = ...`` statement, so changing
  ``MAX_PAGES = 10`` changes the hash while the value an environment variable gives
  it does not; the same for ``module.NAME`` of a module of the same package; for a
  closure variable holding immutable plain data (a workflow built by a factory), its
  value.

What stays out: formatting, comments, docstrings and bare string statements, the
Python function name, the workflow's registered name and version (the manifest keys
and compares those separately, which is also what lets the audit say "renamed"),
step backoff (timing only), other workflows (they have their own hash), and code
outside the package that is not a registered step (libraries, the standard library:
their source differs between machines and Python versions).

The result depends only on source text and the registry, never on ``id()`` or
``hash()``, so every process and every ``PYTHONHASHSEED`` computes the same value.
Compute it once all modules are imported (a step defined below its workflow is not
yet a global while the decorator runs).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import types
from collections.abc import Callable, Mapping
from typing import Any

from durableflow.audit import _source
from durableflow.engine.registry import Registry, StepDefinition, WorkflowDefinition

HASH_VERSION = 1
"""Version of the hashing rules. Bumped whenever the same code would hash differently."""

HASH_FUNCTIONS_KEY = "hash_functions"
"""Key of ``WorkflowDefinition.extra`` with ``{label: function}`` to hash instead of ``fn``.

The seam for graphs: a graph definition puts its state handlers here (labelled by
state name) and its structure under ``HASH_STRUCTURE_KEY``.
"""

HASH_STRUCTURE_KEY = "hash_structure"
"""Key of ``WorkflowDefinition.extra`` with JSON-compatible structure to hash (graphs)."""

# Types whose values count as plain data: a module-level name bound to one of these
# contributes its assignment's source text to the hash.
_DATA_TYPES = (type(None), bool, int, float, complex, str, bytes, tuple, list, dict, set, frozenset)
_IMMUTABLE_DATA_TYPES = (type(None), bool, int, float, complex, str, bytes, tuple, frozenset)


def compute_code_hash(definition: WorkflowDefinition, registry: Registry) -> str:
    """The hex sha256 ``code_hash`` of a registered workflow (or graph) definition.

    Pure and deterministic; parsed sources are cached per file and per function, so
    it is cheap to call for every definition at worker start. Call it after every
    module defining workflows and steps has been imported.

    Example::

        definition = flow.registry.workflow("ingest", 2)
        definition.code_hash = compute_code_hash(definition, flow.registry)
    """
    functions = definition.extra.get(HASH_FUNCTIONS_KEY)
    # Present but empty is a graph whose states all pass their payload on: its
    # structure alone is its code, never the synthesised runner's body.
    if isinstance(functions, Mapping):
        return hash_functions(
            definition.kind,
            functions,
            registry,
            structure=definition.extra.get(HASH_STRUCTURE_KEY),
        )
    return hash_functions(definition.kind, {"workflow": definition.fn}, registry)


def hash_functions(
    kind: str,
    functions: Mapping[str, Callable[..., Any]],
    registry: Registry,
    *,
    structure: object = None,
) -> str:
    """Hash labelled root functions, everything they reach, and an optional structure.

    ``compute_code_hash`` uses it with ``{"workflow": fn}``; a graph passes its state
    handlers by state name and its states/transitions as ``structure`` (JSON-compatible;
    dict keys are sorted, list order counts).
    """
    collector = _Collector(registry)
    for label in sorted(functions):
        collector.add_root(label, functions[label])
    collector.follow_all()
    material = json.dumps(
        {
            "hash_version": HASH_VERSION,
            "kind": kind,
            "structure": structure,
            "parts": sorted(collector.parts),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
        allow_nan=False,
    )
    return hashlib.sha256(material.encode("ascii")).hexdigest()


def _plain_function(value: object) -> types.FunctionType | None:
    """The ``def`` behind decorators, caches, partials and bound methods, if there is one."""
    for _ in range(50):  # a bound on pathological wrapper chains
        if isinstance(value, types.FunctionType):
            try:
                unwrapped = inspect.unwrap(value)
            except ValueError:  # a __wrapped__ cycle
                return value
            return unwrapped if isinstance(unwrapped, types.FunctionType) else value
        if isinstance(value, types.MethodType):
            value = value.__func__
        elif isinstance(value, functools.partial):
            value = value.func
        else:
            # functools.cache and friends are objects, not functions, with __wrapped__.
            wrapped = inspect.getattr_static(value, "__wrapped__", None)
            if wrapped is None or isinstance(value, type):
                return None
            value = wrapped
    return None


class _Collector:
    """Walks from root functions to everything they reach, recording hash parts."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._steps = registry.steps
        self.parts: list[tuple[str, str]] = []
        self._pending: list[types.FunctionType] = []
        # id()s are used only to avoid visiting an object twice; they never reach the
        # hashed material, whose parts are sorted by content.
        self._seen: set[int] = set()
        self._seen_names: set[tuple[str, str]] = set()

    def add_root(self, label: str, value: Callable[..., Any]) -> None:
        function = _plain_function(value)
        if function is None:
            name = getattr(value, "__qualname__", type(value).__qualname__)
            self.parts.append((f"root:{label}", f"opaque:{name}"))
            return
        self.parts.append((f"root:{label}", _source.function_source(function).canonical))
        self._visit(function)

    def follow_all(self) -> None:
        while self._pending:
            self._follow(self._pending.pop())

    def _visit(self, function: types.FunctionType) -> None:
        if id(function) not in self._seen:
            self._seen.add(id(function))
            self._pending.append(function)

    def _follow(self, function: types.FunctionType) -> None:
        source = _source.function_source(function)
        closure = dict(zip(function.__code__.co_freevars, function.__closure__ or (), strict=True))
        for name in source.names:
            found, value, from_closure = _lookup(function, closure, name)
            if not found or self._add_code(value, function.__module__):
                continue
            if from_closure:
                self._add_closure_value(function, name, value)
            elif isinstance(value, _DATA_TYPES):
                self._add_assignment(function.__code__.co_filename, function.__globals__, name)
        for chain in source.attribute_chains:
            # ``module.name`` (or ``package.module.name``): follow modules only, so no
            # property or __getattr__ of an arbitrary object ever runs.
            found, value, _ = _lookup(function, closure, chain[0])
            for attribute in chain[1:]:
                if not found or not isinstance(value, types.ModuleType):
                    break
                module = value
                value = inspect.getattr_static(module, attribute, _MISSING)
                found = value is not _MISSING
                if found and not isinstance(value, types.ModuleType):
                    self._add_module_attribute(function, module, attribute, value)
                    break

    def _add_module_attribute(
        self, owner: types.FunctionType, module: types.ModuleType, name: str, value: object
    ) -> None:
        if self._add_code(value, owner.__module__):
            return
        filename = getattr(module, "__file__", None)
        if (
            isinstance(value, _DATA_TYPES)
            and isinstance(filename, str)
            and _same_package(module.__name__, owner.__module__)
        ):
            self._add_assignment(filename, vars(module), name)

    def _registered_step(self, value: object) -> StepDefinition | None:
        definition = inspect.getattr_static(value, "__durableflow_step__", None)
        if isinstance(definition, StepDefinition):
            registered = self._steps.get(definition.name)
            if registered is not None and registered.fn is definition.fn:
                return registered
            return None
        if callable(value):
            return self._registry.step_for_function(value)
        return None

    def _add_code(self, value: object, owner_module: str) -> bool:
        """Record a step, helper function or class; True when ``value`` is code at all."""
        step = self._registered_step(value)
        if step is not None:
            self._add_step(step)
            return True
        if inspect.getattr_static(value, "__durableflow_workflow__", None) is not None:
            return True  # another workflow: it has its own hash and version
        if inspect.getattr_static(value, "__durableflow_step__", None) is not None:
            return True  # a step of another Flow: not part of this registry's code
        function = _plain_function(value)
        if function is not None:
            if _same_package(function.__module__, owner_module) and id(function) not in self._seen:
                text = _source.function_source(function).canonical
                self.parts.append((f"helper:{function.__qualname__}", text))
                self._visit(function)
            return True
        if isinstance(value, type):
            if _same_package(value.__module__, owner_module) and id(value) not in self._seen:
                self._seen.add(id(value))
                class_text = _source.class_source(value)
                if class_text is not None:
                    self.parts.append((f"class:{value.__qualname__}", class_text))
            return True
        return False

    def _add_step(self, step: StepDefinition) -> None:
        if id(step) in self._seen:
            return
        self._seen.add(id(step))
        policy = json.dumps(
            {"name": step.name, "retries": step.retries, "timeout": step.timeout},
            sort_keys=True,
        )
        function = _plain_function(step.fn)
        body = _source.function_source(function).canonical if function else "opaque"
        self.parts.append((f"step:{step.name}", f"{policy}{body}"))
        if function is not None:
            self._visit(function)

    def _add_closure_value(self, owner: types.FunctionType, name: str, value: object) -> None:
        if not isinstance(value, _IMMUTABLE_DATA_TYPES):
            return  # a list or dict in a closure may be runtime state, not configuration
        try:
            text = _source.canonical_literal(value)
        except TypeError:
            return  # holds something that is not plain data (an object, a client)
        self.parts.append((f"closure:{owner.__qualname__}:{name}", text))

    def _add_assignment(self, filename: str, module_globals: dict[str, Any], name: str) -> None:
        if (filename, name) in self._seen_names:
            return
        self._seen_names.add((filename, name))
        statements = _source.module_assignments(filename, module_globals).get(name)
        if statements:
            self.parts.append((f"constant:{name}", "|".join(statements)))


_MISSING = object()


def _same_package(module: object, other: object) -> bool:
    """Same top-level package (``app.steps`` and ``app.flows``): the project's own code.

    Libraries and the standard library are left out on purpose: their code differs
    between machines and Python versions, and it is not the workflow's to version.
    """
    if not isinstance(module, str) or not isinstance(other, str):
        return False
    return module.partition(".")[0] == other.partition(".")[0]


def _lookup(
    function: types.FunctionType, closure: dict[str, types.CellType], name: str
) -> tuple[bool, object, bool]:
    """Resolve ``name`` as ``function`` would: closure, then module globals (not builtins).

    Returns ``(found, value, from_closure)``.
    """
    cell = closure.get(name)
    if cell is not None:
        try:
            return True, cell.cell_contents, True
        except ValueError:  # a cell not filled yet
            return False, None, True
    if name in function.__globals__:
        return True, function.__globals__[name], False
    return False, None, False
