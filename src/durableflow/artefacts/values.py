"""The values artefacts carry beside their bytes, checked before anything is stored.

A run's configuration, the custom fields a step adds to its sidecars and the names of
the files it writes all end up in JSON (a sidecar, a ``jsonb`` column) or in a storage
key. JSON cannot carry some Python values faithfully (NaN, infinities, keys that are
not strings) and Postgres refuses NUL in text; rather than letting a value be silently
changed, or fail later in a statement shared with other runs, each is refused here
with ``InvalidFieldValue`` naming where it sits.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from pydantic import BaseModel

from durableflow.engine.values import int_too_long
from durableflow.errors import InvalidFieldValue

MAX_CONFIG_BYTES = 1024 * 1024
"""Largest canonical JSON of a run's configuration."""

MAX_CUSTOM_BYTES = 64 * 1024
"""Largest canonical JSON of the custom fields of one sidecar."""

MAX_DEPTH = 32
"""Deepest nesting of objects and arrays accepted in a config or custom field."""

_ARTEFACT_NAME = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}(\.[A-Za-z0-9][A-Za-z0-9_.+-]{0,31})?$"
)


def _path(parent: str, part: str | int) -> str:
    return f"{parent}[{part}]" if isinstance(part, int) else f"{parent}.{part}"


def _check_text(text: str, field: str) -> None:
    if "\x00" in text:
        raise InvalidFieldValue(field, "it contains a NUL character, which Postgres cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidFieldValue(
            field, f"it is not valid Unicode text (a lone surrogate at {exc.start})"
        ) from None


def plain_json(value: Any, field: str, *, depth: int = 0) -> Any:
    """``value`` as JSON builtins, or ``InvalidFieldValue`` naming the first bad part.

    Accepted: None, bool, int, finite float, str, list/tuple, dict with str keys, and
    pydantic models (dumped in JSON mode). Nothing is converted silently: a NaN, a
    set, bytes or a datetime is refused rather than turned into something else.
    """
    if depth > MAX_DEPTH:
        raise InvalidFieldValue(field, f"it is nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        problem = int_too_long(value)
        if problem is not None:
            raise InvalidFieldValue(field, f"it {problem}; store it as a string")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidFieldValue(field, f"{value!r} is not a finite number; JSON cannot hold it")
        return value
    if isinstance(value, str):
        _check_text(value, field)
        return value
    if isinstance(value, BaseModel):
        return plain_json(value.model_dump(mode="json"), field, depth=depth)
    if isinstance(value, list | tuple):
        return [
            plain_json(item, _path(field, index), depth=depth + 1)
            for index, item in enumerate(value)
        ]
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidFieldValue(
                    _path(field, repr(key)),
                    f"the key {key!r} is a {type(key).__name__}; JSON object keys are strings",
                )
            _check_text(key, f"{field} (a key)")
            result[key] = plain_json(item, _path(field, key), depth=depth + 1)
        return result
    raise InvalidFieldValue(
        field,
        f"a {type(value).__qualname__} is not JSON; use str, int, float, bool, None, lists, "
        "dicts with str keys, or a pydantic model",
    )


def name_argument(value: object, field: str) -> str:
    """A step, stage or workflow name given to replay/fork/prune, checked before any query."""
    if not isinstance(value, str) or not value:
        raise InvalidFieldValue(field, f"{value!r} is not a name (a non-empty str)")
    if len(value) > 1000:
        raise InvalidFieldValue(field, "it is longer than 1000 characters")
    _check_text(value, field)
    return value


def canonical_json(value: Any) -> str:
    """The one text of a JSON value: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def config_to_json(config: Any) -> tuple[str | None, str | None]:
    """A run's configuration as (canonical JSON, its sha256); (None, None) without one.

    ``config`` is a pydantic model or a dict; the hash is what replays and sidecars
    compare, so equal configurations hash equally whatever their key order.
    """
    if config is None:
        return None, None
    if not isinstance(config, BaseModel | dict):
        raise InvalidFieldValue(
            "config",
            f"a {type(config).__qualname__} is not a configuration; pass a pydantic model or "
            "a dict",
        )
    text = canonical_json(plain_json(config, "config"))
    size = len(text.encode("utf-8"))
    if size > MAX_CONFIG_BYTES:
        raise InvalidFieldValue(
            "config", f"it is {size} bytes as JSON, over the limit of {MAX_CONFIG_BYTES}"
        )
    return text, config_hash(text)


def config_hash(canonical: str) -> str:
    """sha256 (hex) of a configuration's canonical JSON."""
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def custom_fields(
    fields: dict[str, Any], *, existing: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Custom sidecar fields merged onto ``existing``, checked and size-limited."""
    merged = dict(existing or {})
    for name, value in fields.items():
        _check_text(name, f"custom.{name!r}")
        merged[name] = plain_json(value, f"custom.{name}")
    size = len(canonical_json(merged).encode("utf-8"))
    if size > MAX_CUSTOM_BYTES:
        raise InvalidFieldValue(
            "custom", f"the custom fields are {size} bytes as JSON, over {MAX_CUSTOM_BYTES}"
        )
    return merged


def artefact_name(name: object) -> tuple[str, str | None]:
    """Split an artefact name (``report.pdf``) into its stem and extension.

    A name is 1-100 letters, digits, ``_`` or ``-`` (starting with a letter or digit),
    optionally followed by ``.`` and an extension: it becomes part of a storage key,
    so ``/``, ``..``, spaces and control characters are refused.
    """
    if not isinstance(name, str):
        raise InvalidFieldValue("name", f"an artefact name is a str, not a {type(name).__name__}")
    if not _ARTEFACT_NAME.fullmatch(name):
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise InvalidFieldValue(
            "name",
            f"{shown!r} is not an artefact name: use 1-100 letters, digits, '_' or '-' "
            "(starting with a letter or digit), optionally '.' and an extension, e.g. "
            "'report.pdf'",
        )
    stem, dot, extension = name.partition(".")
    return stem, extension if dot else None
