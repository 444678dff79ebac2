"""JSON (de)serialisation driven by annotations, through pydantic. Never pickle."""

from __future__ import annotations

import json
import traceback
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from durableflow.errors import PayloadTooLarge, SerializationError


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__qualname__", None) or repr(annotation)


@lru_cache(maxsize=1024)
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


class Codec:
    """Turns values of one annotation into JSON text and back.

    ``what`` names the value in errors, e.g. ``"output of step 'fetch'"``.
    """

    __slots__ = ("_adapter", "annotation", "max_bytes", "what")

    def __init__(self, annotation: Any, what: str, *, max_bytes: int) -> None:
        self.annotation = annotation
        self.what = what
        self.max_bytes = max_bytes
        try:
            self._adapter = _adapter(annotation)
        except TypeError:  # unhashable annotation (rare): build one uncached
            self._adapter = TypeAdapter(annotation)

    def dumps(self, value: Any) -> str:
        try:
            data = self._adapter.dump_json(value)
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            raise SerializationError(
                f"cannot serialise the {self.what}: a value of type "
                f"{type(value).__qualname__} is not JSON for annotation "
                f"{_type_name(self.annotation)} ({exc}); return a pydantic model, a dataclass "
                "or JSON builtins",
                what=self.what,
                type_name=type(value).__qualname__,
            ) from exc
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(
                f"the {self.what} is {len(data)} bytes as JSON, over the limit of "
                f"{self.max_bytes} (DURABLEFLOW_MAX_PAYLOAD_BYTES); store large data as an "
                "artefact and pass its key",
                what=self.what,
                type_name=type(value).__qualname__,
            )
        return data.decode()

    def loads(self, text: str | None) -> Any:
        try:
            return self._adapter.validate_json(text if text is not None else "null")
        except ValidationError as exc:
            raise self._mismatch(exc) from exc

    def validate(self, value: Any) -> Any:
        """Check (and coerce) a Python value against the annotation: workflow inputs."""
        try:
            return self._adapter.validate_python(value)
        except ValidationError as exc:
            raise self._mismatch(exc) from exc

    def _mismatch(self, exc: ValidationError) -> SerializationError:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        return SerializationError(
            f"the {self.what} does not match its annotation {_type_name(self.annotation)}: "
            f"{first['msg']}{f' (at {where})' if where else ''}",
            what=self.what,
            type_name=_type_name(self.annotation),
        )


def describe_error(exc: BaseException) -> dict[str, Any]:
    """The recorded form of an exception: type, message, traceback (JSON-safe)."""
    cls = type(exc)
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


def error_json(exc: BaseException) -> str:
    return json.dumps(describe_error(exc))
