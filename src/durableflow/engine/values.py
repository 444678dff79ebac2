"""Values JSON (and Postgres) cannot carry faithfully, found before they are written.

pydantic serialises some values lossily without complaint: NaN and infinities become
``null``, a dict key ``1`` becomes ``"1"``, a generator is consumed into a list. A
string containing U+0000 serialises fine but Postgres refuses it in ``jsonb`` (and a
lone surrogate, not UTF-8, fails deep inside pydantic without saying where). Any of
these would make the value a run sees on replay differ from the one it saw live, or
fail a statement shared with other runs. ``find_problem`` walks the value once, in
the order pydantic will, and says where the first such value is
(``output.items[3].name``) and what to do.

Dict keys that are not strings are allowed where the annotation says how to read
them back (``dict[int, str]``): pydantic then converts them in both directions.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class ValueProblem:
    """Where in a value the problem is, what it is, and how to fix it."""

    path: str
    problem: str
    fix: str


class _Found(Exception):
    """Unwinds the walk; collects the path on the way out (no strings built otherwise)."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.parts: list[tuple[str, object]] = []


_NUL = "\x00"
# Postgres's numeric (behind jsonb numbers) holds up to 131,072 digits before the point.
_MAX_NUMERIC_BITS = 435_000
_NUL_FIX = "remove or replace U+0000 characters before returning the value"
_FLOAT_FIX = "use None, or a string such as 'NaN', or a finite number"
_KEY_FIX = (
    "use string keys, or annotate the value with the key type (for example dict[int, str]) "
    "so that it is converted back when read"
)
_SURROGATE_FIX = "decode the text that produced it with errors='replace', or drop the character"
_ITERATOR_FIX = "return a list (list(...)) instead; an iterator can be read only once"


def find_problem(value: Any, root: str, *, typed_keys: bool) -> ValueProblem | None:
    """The first value inside ``value`` that JSON cannot carry faithfully, or None.

    ``root`` starts the path (``"output"``, ``"input"``). ``typed_keys``: the annotation
    declares non-string dict keys somewhere, so such keys are left to pydantic.
    """
    kind = type(value)
    if (kind is int and value.bit_length() <= _MAX_NUMERIC_BITS) or value is None or kind is bool:
        return None  # the commonest outputs, without a call
    try:
        _walk(value, typed_keys)
    except _Found as found:
        return ValueProblem(_path(root, found.parts), found.problem, found.fix)
    except RecursionError:
        return ValueProblem(root, "is nested too deeply (or contains itself)", "flatten it")
    return None


def _path(root: str, parts: list[tuple[str, object]]) -> str:
    text = [root]
    for kind, part in reversed(parts):
        if kind == "attr" or (kind == "key" and isinstance(part, str) and part.isidentifier()):
            text.append(f".{part}")
        else:
            text.append(f"[{part!r}]")
    return "".join(text)


def _walk(value: Any, typed_keys: bool) -> None:
    kind = type(value)
    if kind is str:
        if _NUL in value:
            raise _Found(
                "contains the character U+0000 (NUL), which Postgres cannot store", _NUL_FIX
            )
        if not value.isascii():  # isascii is O(1); only non-ASCII text can hold a surrogate
            _check_utf8(value)
        return
    if kind is int:
        if value.bit_length() > _MAX_NUMERIC_BITS:
            digits = int(value.bit_length() * 0.30103)  # log10(2): no str() of a huge int
            raise _Found(
                f"is an integer of about {digits} digits, more than Postgres's numeric holds",
                "store it as a string",
            )
        return
    if kind is bool or value is None:
        return
    if kind is float:
        if not math.isfinite(value):
            raise _Found(f"is the float {value!r}, which JSON cannot represent", _FLOAT_FIX)
        return
    if kind is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str and not typed_keys and not isinstance(key, str):
                found = _Found(
                    f"has the key {key!r} of type {type(key).__name__}; JSON keys are strings, "
                    "so it would be read back as a different key",
                    _KEY_FIX,
                )
                found.parts.append(("key", key))
                raise found
            if isinstance(key, str) and _NUL in key:
                found = _Found(
                    "is a key containing U+0000 (NUL), which Postgres cannot store", _NUL_FIX
                )
                found.parts.append(("key", key))
                raise found
            if isinstance(key, str) and not key.isascii():
                try:
                    _check_utf8(key)
                except _Found as bad_key:
                    bad_key.problem = f"is a key that {bad_key.problem}"
                    bad_key.parts.append(("key", key))
                    raise
            _walk_inside(item, typed_keys, "key", key)
        return
    if kind is list or kind is tuple or isinstance(value, (list, tuple, set, frozenset)):
        for index, item in enumerate(value):
            _walk_inside(item, typed_keys, "index", index)
        return
    if isinstance(value, BaseModel):
        for name in type(value).model_fields:
            _walk_inside(getattr(value, name, None), typed_keys, "attr", name)
        extra = value.__pydantic_extra__
        if extra:
            for name, item in extra.items():
                _walk_inside(item, typed_keys, "attr", name)
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            _walk_inside(getattr(value, field.name, None), typed_keys, "attr", field.name)
        return
    if isinstance(value, str):  # str subclasses: StrEnum members and the like
        _walk(str(value), typed_keys)
        return
    if isinstance(value, float):
        _walk(float(value), typed_keys)
        return
    if isinstance(value, (bytes, bytearray)):
        if b"\x00" in value:
            raise _Found("contains the byte 0 (NUL), which Postgres cannot store", _NUL_FIX)
        return
    if isinstance(value, Iterator):
        raise _Found(f"is an iterator ({kind.__name__}), consumed by serialising it", _ITERATOR_FIX)
    # Everything else (datetime, UUID, Decimal, Enum, Path, ...) pydantic writes as a
    # string or number it reads back as the same value.


def _check_utf8(text: str) -> None:
    """A lone surrogate (from a bad decode, or ``"\\ud800"``) is not UTF-8: Postgres cannot
    store it and pydantic refuses to write it without saying where it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _Found(
            f"contains a lone surrogate ({text[exc.start]!r} at {exc.start}), which is not "
            "valid UTF-8",
            _SURROGATE_FIX,
        ) from None


def _walk_inside(item: Any, typed_keys: bool, kind: str, part: object) -> None:
    """Walk ``item``, found at ``part`` (a key, index or attribute) of its container."""
    try:
        _walk(item, typed_keys)
    except _Found as found:
        found.parts.append((kind, part))
        raise


@lru_cache(maxsize=1024)
def annotation_has_typed_keys(annotation: Any) -> bool:
    """True when ``annotation`` declares a mapping with non-string keys anywhere inside."""
    return _typed_keys(annotation, set())


def _typed_keys(annotation: Any, seen: set[int]) -> bool:
    if id(annotation) in seen:
        return False
    seen.add(id(annotation))
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if (
        isinstance(origin, type)
        and issubclass(origin, Mapping)
        and args
        and args[0] is not str
        and args[0] is not Any
    ):
        return True
    if any(_typed_keys(arg, seen) for arg in args if not isinstance(arg, (str, int, float))):
        return True
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return any(_typed_keys(f.annotation, seen) for f in annotation.model_fields.values())
        if dataclasses.is_dataclass(annotation) or typing.is_typeddict(annotation):
            try:
                hints = typing.get_type_hints(annotation)
            except Exception:  # unresolved forward references: nothing to learn
                return False
            return any(_typed_keys(hint, seen) for hint in hints.values())
    return False
