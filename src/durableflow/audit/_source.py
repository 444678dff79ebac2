"""Find a function's source and turn it into canonical text that only changes with behaviour.

The canonical text is a dump of the function's AST written by this module (not
``ast.dump``, whose output grows new fields between Python releases): node types and
non-empty fields, without positions, comments, formatting, docstrings or bare string
statements. Fields a newer Python adds empty (``type_params`` in 3.12) are skipped, so
the text stays the same across Python releases that parse the code into the same tree.

Source files are parsed once per process and indexed; a function's canonical text is
cached per code object, so hashing a hundred workflows at worker start parses each
module once.
"""

from __future__ import annotations

import ast
import json
import linecache
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

# Fields that carry no behaviour: the comment-form type hints, the ``u`` prefix of a
# string, and Load/Store/Del (always implied by where the name sits).
_SKIPPED_FIELDS = frozenset({"type_comment", "kind", "ctx"})

# ``@flow.workflow(...)``, ``@flow.step(...)``, ``@graph.state(...)``: the registration
# itself. Its arguments are accounted for by the definition (step policy, graph
# structure) or deliberately left out (workflow name and version), see hashing.py.
REGISTRATION_DECORATORS = frozenset({"workflow", "step", "state"})

_FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef)
_BODY_OWNERS = (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _is_bare_string(statement: ast.stmt) -> bool:
    """A docstring or a string used as a comment: it has no effect when run."""
    return (
        isinstance(statement, ast.Expr)
        and isinstance(statement.value, ast.Constant)
        and isinstance(statement.value.value, str)
    )


def _is_empty_string(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value == ""


def is_registration_decorator(node: ast.expr) -> bool:
    """True for ``x.workflow``, ``x.step(...)``, ``state(...)`` style decorators."""
    target = node.func if isinstance(node, ast.Call) else node
    if isinstance(target, ast.Attribute):
        return target.attr in REGISTRATION_DECORATORS
    return isinstance(target, ast.Name) and target.id in REGISTRATION_DECORATORS


def _literal(value: object, out: list[str]) -> None:
    """Write a constant with its type, so ``1``, ``1.0``, ``True`` and ``"1"`` all differ."""
    if value is None or value is Ellipsis or isinstance(value, bool):
        out.append(repr(value))
    elif isinstance(value, int):
        out.append(f"i{value}")
    elif isinstance(value, float | complex):
        out.append(f"f{value!r}")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=True))
    elif isinstance(value, bytes):
        out.append(f"b{value.hex()}")
    elif isinstance(value, tuple | list):
        out.append("(" if isinstance(value, tuple) else "[")
        for item in value:
            _literal(item, out)
            out.append(",")
        out.append(")" if isinstance(value, tuple) else "]")
    elif isinstance(value, frozenset | set):
        # Sets iterate in hash order, which PYTHONHASHSEED changes: sort the parts.
        parts = sorted(canonical_literal(item) for item in value)
        out.append("{" + ",".join(parts) + "}")
    elif isinstance(value, dict):
        out.append("{")
        for key, item in value.items():
            _literal(key, out)
            out.append(":")
            _literal(item, out)
            out.append(",")
        out.append("}")
    else:
        raise TypeError(f"not a literal: {type(value).__name__}")


def canonical_literal(value: object) -> str:
    """Canonical text of a plain data value (raises ``TypeError`` for anything else)."""
    out: list[str] = []
    _literal(value, out)
    return "".join(out)


def _dump(value: object, out: list[str]) -> None:
    if isinstance(value, ast.AST):
        out.append(type(value).__name__)
        out.append("(")
        for name in value._fields:
            if name in _SKIPPED_FIELDS:
                continue
            item = getattr(value, name, None)
            if item is None or (isinstance(item, list) and not item):
                continue  # absent or empty: newer Pythons add such fields (type_params)
            if name == "body" and isinstance(value, _BODY_OWNERS):
                item = [statement for statement in item if not _is_bare_string(statement)]
            elif name == "values" and isinstance(value, ast.JoinedStr):
                # Some 3.12 releases put an empty string part into f-string format specs.
                item = [part for part in item if not _is_empty_string(part)]
            out.append(name)
            out.append("=")
            _dump(item, out)
            out.append(",")
        out.append(")")
    elif isinstance(value, list):
        out.append("[")
        for item in value:
            _dump(item, out)  # None stays in lists: Dict.keys uses it for **spread
            out.append(",")
        out.append("]")
    else:
        _literal(value, out)  # identifiers and constants alike


def canonical_node(node: ast.AST) -> str:
    """Canonical text of any AST node."""
    out: list[str] = []
    _dump(node, out)
    return "".join(out)


def canonical_function_node(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """Canonical text of a ``def``: without its name and its registration decorator.

    The name is left out because a definition is identified by what it is registered
    as (the workflow or step name), not by the Python identifier.
    """
    kept = [d for d in node.decorator_list if not is_registration_decorator(d)]
    copy = type(node)(
        name="",
        args=node.args,
        body=node.body,
        decorator_list=kept,
        returns=node.returns,
    )
    return canonical_node(copy)


def _loaded_names(nodes: list[ast.AST]) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """Names read by ``nodes``, and the dotted chains ``a.b.c`` read from such names."""
    names: set[str] = set()
    chains: set[tuple[str, ...]] = set()
    for root in nodes:
        for node in ast.walk(root):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                chain: list[str] = [node.attr]
                base: ast.expr = node.value
                while isinstance(base, ast.Attribute):
                    chain.append(base.attr)
                    base = base.value
                if isinstance(base, ast.Name):
                    chain.append(base.id)
                    chains.add(tuple(reversed(chain)))
    return tuple(sorted(names)), tuple(sorted(chains))


@dataclass(frozen=True)
class FunctionSource:
    """A function's canonical text and the names it reads from outside itself."""

    canonical: str
    names: tuple[str, ...]
    attribute_chains: tuple[tuple[str, ...], ...]
    from_source: bool = True


@dataclass
class _ParsedFile:
    text: str
    functions: dict[tuple[int, str], ast.FunctionDef | ast.AsyncFunctionDef] = field(
        default_factory=dict
    )
    lambdas: dict[int, list[ast.Lambda]] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    assignments: dict[str, list[str]] = field(default_factory=dict)


def _index(tree: ast.Module, text: str) -> _ParsedFile:
    parsed = _ParsedFile(text=text)
    for node in ast.walk(tree):
        if isinstance(node, _FUNCTION_NODES):
            # co_firstlineno is the line of the first decorator when there is one.
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            parsed.functions[(first, node.name)] = node
        elif isinstance(node, ast.Lambda):
            parsed.lambdas.setdefault(node.lineno, []).append(node)
    _index_classes(tree.body, "", parsed)
    for statement in tree.body:
        targets: list[ast.expr] = []
        if isinstance(statement, ast.Assign):
            targets = statement.targets
        elif isinstance(statement, ast.AnnAssign | ast.AugAssign) and (
            not isinstance(statement, ast.AnnAssign) or statement.value is not None
        ):
            targets = [statement.target]
        for target in targets:
            if isinstance(target, ast.Name):
                parsed.assignments.setdefault(target.id, []).append(canonical_node(statement))
    return parsed


def _index_classes(body: list[ast.stmt], prefix: str, parsed: _ParsedFile) -> None:
    for statement in body:
        if isinstance(statement, ast.ClassDef):
            qualname = prefix + statement.name
            parsed.classes.setdefault(qualname, statement)
            _index_classes(statement.body, qualname + ".", parsed)


_files: dict[str, _ParsedFile] = {}
_functions: dict[tuple[str, types.CodeType], FunctionSource] = {}


def _parsed_file(filename: str, module_globals: dict[str, Any] | None) -> _ParsedFile | None:
    """The indexed AST of ``filename``, re-parsed only when its text changed."""
    linecache.checkcache(filename)
    text = "".join(linecache.getlines(filename, module_globals))
    if not text:
        return None
    cached = _files.get(filename)
    if cached is not None and cached.text == text:
        return cached
    try:
        tree = ast.parse(text, filename=filename)
    except (SyntaxError, ValueError):
        return None
    parsed = _index(tree, text)
    _files[filename] = parsed
    return parsed


def module_assignments(
    filename: str, module_globals: dict[str, Any] | None
) -> dict[str, list[str]]:
    """Canonical text of each top-level ``NAME = ...`` statement of a file, by name."""
    parsed = _parsed_file(filename, module_globals)
    return parsed.assignments if parsed is not None else {}


def class_source(cls: type) -> str | None:
    """Canonical text of a class's definition, or None when its source is not available."""
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    if not isinstance(filename, str):
        return None
    parsed = _parsed_file(filename, getattr(module, "__dict__", None))
    if parsed is None:
        return None
    node = parsed.classes.get(cls.__qualname__)
    return canonical_node(node) if node is not None else None


def function_source(fn: types.FunctionType) -> FunctionSource:
    """Canonical text and outside names of ``fn`` (cached per code object)."""
    code = fn.__code__
    key = (code.co_filename, code)
    cached = _functions.get(key)
    if cached is None:
        cached = _function_source_uncached(fn)
        _functions[key] = cached
    return cached


def _function_source_uncached(fn: types.FunctionType) -> FunctionSource:
    code = fn.__code__
    parsed = _parsed_file(code.co_filename, fn.__globals__)
    if parsed is not None:
        node = parsed.functions.get((code.co_firstlineno, code.co_name))
        if node is not None:
            kept = [d for d in node.decorator_list if not is_registration_decorator(d)]
            names, chains = _loaded_names(
                [node.args, *kept, *node.body, *([node.returns] if node.returns else [])]
            )
            return FunctionSource(canonical_function_node(node), names, chains)
        lambdas = parsed.lambdas.get(code.co_firstlineno)
        if code.co_name == "<lambda>" and lambdas:
            # Several lambdas on one line cannot be told apart from the code object:
            # hashing all of them errs on the side of noticing a change.
            names, chains = _loaded_names(list(lambdas))
            return FunctionSource("|".join(canonical_node(n) for n in lambdas), names, chains)
    return _bytecode_source(code)


def _bytecode_source(code: types.CodeType) -> FunctionSource:
    """Fallback when no source exists (``exec``, REPL): stable per Python version only."""
    out = [f"bytecode/{sys.version_info.major}.{sys.version_info.minor}:", code.co_code.hex()]
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            out.append(_bytecode_source(constant).canonical)
        else:
            try:
                out.append(canonical_literal(constant))
            except TypeError:
                out.append(type(constant).__name__)
    out.append(json.dumps([code.co_names, code.co_varnames, code.co_freevars]))
    names = sorted(set(_code_names(code)) | set(code.co_freevars))
    return FunctionSource("".join(out), tuple(names), (), from_source=False)


def _code_names(code: types.CodeType) -> Iterator[str]:
    yield from code.co_names
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            yield from _code_names(constant)


def clear_caches() -> None:
    """Forget every parsed file and function (tests that rewrite modules in-process)."""
    _files.clear()
    _functions.clear()
