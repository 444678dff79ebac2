"""Values JSON (and Postgres) cannot carry faithfully, found before they are written.

pydantic serialises some values lossily without complaint: NaN and infinities become
``null``, a dict key ``1`` becomes ``"1"``, a generator is consumed into a list. A
string containing U+0000 serialises fine but Postgres refuses it in ``jsonb`` (and a
lone surrogate, not UTF-8, fails deep inside pydantic without saying where). Any of
these would make the value a run sees on replay differ from the one it saw live, or
fail a statement shared with other runs. Some values JSON carries but cannot give
back: an integer of more than 4,300 digits (pydantic's JSON parser, and ``json`` at
Python's default ``sys.get_int_max_str_digits()``, refuse to read it), a Decimal NaN or
infinity (written as a string that a ``Decimal`` field refuses), a tuple dict key
(written as ``"1,2"``). Committed, such a value would break its run for good, so it is
refused before it is written too. ``find_problem`` walks the value once, in
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
from decimal import Decimal
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
# The most digits an integer may have to be read back from JSON: pydantic's parser
# (jiter) refuses more whatever the process's sys.get_int_max_str_digits() says, and
# json.loads refuses more at Python's default limit. (Postgres's numeric holds more.)
MAX_INT_DIGITS = 4300
_INT_LIMIT = 10**MAX_INT_DIGITS
# An int of at most this many bits has at most 4,300 digits (14,284 * log10(2) < 4300):
# the common case is settled by bit_length(), without comparing against _INT_LIMIT.
_SAFE_INT_BITS = 14_284
_INT_FIX = "store it as a string (str(n), with sys.set_int_max_str_digits) or split it"
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
    if (kind is int and value.bit_length() <= _SAFE_INT_BITS) or value is None or kind is bool:
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
            text.append(f"[{_shown(part)}]")
    return "".join(text)


def _shown(key: object) -> str:
    """``repr(key)``, or a stand-in for an integer too long for ``repr``."""
    try:
        return repr(key)
    except ValueError:  # sys.get_int_max_str_digits()
        return f"<{type(key).__name__} of more than {MAX_INT_DIGITS} digits>"


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
        if value.bit_length() > _SAFE_INT_BITS:
            _check_int_digits(value)
        return
    if kind is bool or value is None:
        return
    if kind is float:
        if not math.isfinite(value):
            raise _Found(f"is the float {value!r}, which JSON cannot represent", _FLOAT_FIX)
        return
    if kind is dict or isinstance(value, Mapping):
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                _check_key(key, typed_keys)
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
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _Found(
                f"is the Decimal {str(value)!r}, which JSON cannot represent as a number "
                "(a Decimal field refuses it when it is read back)",
                _FLOAT_FIX,
            )
        return
    if isinstance(value, Iterator):
        raise _Found(f"is an iterator ({kind.__name__}), consumed by serialising it", _ITERATOR_FIX)
    # Everything else (datetime, UUID, Decimal, Enum, Path, ...) pydantic writes as a
    # string or number it reads back as the same value.


def int_too_long(value: int) -> str | None:
    """Why the integer ``value`` cannot be read back from JSON (None when it can)."""
    if value.bit_length() <= _SAFE_INT_BITS or -_INT_LIMIT < value < _INT_LIMIT:
        return None
    return (
        f"is an integer of more than {MAX_INT_DIGITS} digits, the most JSON readers "
        "(pydantic, json) read back"
    )


def _check_int_digits(value: int) -> None:
    problem = int_too_long(value)
    if problem is not None:
        raise _Found(problem, _INT_FIX)


def _check_key(key: object, typed_keys: bool) -> None:
    """A dict key that is not a string: JSON writes it as one, so it must be read back as
    the same key (the annotation says how) and that string must be readable."""
    problem = None
    fix = _KEY_FIX
    if not typed_keys:
        problem = (
            f"has the key {_shown(key)} of type {type(key).__name__}; JSON keys are strings, "
            "so it would be read back as a different key"
        )
    elif isinstance(key, (tuple, frozenset, list)):
        # pydantic writes (1, 2) as the key "1,2", which it cannot parse back.
        problem = (
            f"has the key {_shown(key)} of type {type(key).__name__}, written as a string that "
            "cannot be read back as one"
        )
        fix = "use string keys you build and parse yourself, or a list of (key, value) pairs"
    if problem is not None:
        found = _Found(problem, fix)
        found.parts.append(("key", key))
        raise found
    try:
        _walk(key, typed_keys)  # a huge int key, a NaN key
    except _Found as bad_key:
        bad_key.problem = f"is a key that {bad_key.problem}"
        bad_key.parts.append(("key", key))
        raise


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
