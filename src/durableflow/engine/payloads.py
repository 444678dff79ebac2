"""Values sent between runs (signal payloads, event values): JSON, carried faithfully.

pydantic's JSON mode quietly writes NaN and infinities as ``null`` and turns integer
dict keys into strings; Postgres refuses NUL characters in ``jsonb``. A payload that
would be changed or refused is rejected here, with a ``SerializationError`` naming
it, before it reaches a statement.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import TypeAdapter

from durableflow.engine.serialization import Codec
from durableflow.errors import SerializationError

_ANY: TypeAdapter[Any] = TypeAdapter(Any)


def payload_json(
    value: Any, what: str, *, max_bytes: int, root: str = "value", workflow: str | None = None
) -> str:
    """``value`` as JSON text, or ``SerializationError`` / ``PayloadTooLarge`` naming ``what``,
    the field where inside it the problem is (``root``: ``"payload"`` for a signal,
    ``"value"`` for an event; ``payload.items[2].name``) and, sent from a workflow, that
    ``workflow``."""
    text = Codec(Any, what, max_bytes=max_bytes, root=root, workflow=workflow).dumps(value)
    check_faithful(value, what, verb="send", workflow=workflow)
    return text


def check_faithful(
    value: Any, what: str, *, verb: str = "store", workflow: str | None = None
) -> None:
    """``SerializationError`` naming ``what`` if JSON would change ``value`` or Postgres
    would refuse it (NUL, NaN, infinities, keys that are not strings).

    Also used where a refused statement would cost more than one run: a start inside
    a caller's transaction (the caller's whole transaction would abort) and a
    transactional step's output (its whole transaction would roll back).
    """
    problem = _unfaithful(_ANY.dump_python(value, mode="python"))
    if problem is not None:
        raise SerializationError(
            f"cannot {verb} the {what}: {problem}; JSON cannot carry it faithfully",
            what=what,
            type_name=type(value).__qualname__,
            workflow=workflow,
        )


def _unfaithful(value: Any) -> str | None:
    """What in ``value`` JSON would change or Postgres would refuse, if anything."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "a string holds a NUL character"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return f"{item!r} is not a JSON number"
        elif isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"the dict key {key!r} is not a string"
                stack.append(key)
                stack.append(child)
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend(item)
    return None
