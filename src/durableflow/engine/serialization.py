"""JSON (de)serialisation driven by annotations, through pydantic. Never pickle.

Values are checked where they enter durableflow (see ``engine.values``): anything
JSON or Postgres cannot carry faithfully is refused with a ``SerializationError``
naming the value, the path inside it and what to do, never silently changed.
"""

from __future__ import annotations

import json
import traceback
from functools import lru_cache
from typing import Any

from pydantic import PydanticUserError, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from durableflow.engine.values import annotation_has_typed_keys, find_problem
from durableflow.errors import NonRetryable, PayloadTooLarge, SerializationError

# Longest idempotency key, correlation id or queue name, in UTF-8 bytes: long enough
# for any key a caller composes, short enough for a btree index entry.
MAX_KEY_BYTES = 512


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__qualname__", None) or repr(annotation)


@lru_cache(maxsize=1024)
def _adapter(annotation: Any) -> TypeAdapter[Any]:
    return TypeAdapter(annotation)


class Codec:
    """Turns values of one annotation into JSON text and back.

    ``what`` names the value in errors, e.g. ``"output of step 'fetch'"``; ``root``
    starts the path of a problem inside it (``"output"``, ``"input"``); ``workflow`` and
    ``step`` name the definition it belongs to. An annotation pydantic cannot handle
    is refused here, at declaration time, with a ``SerializationError``.
    """

    __slots__ = (
        "_adapter",
        "_typed_keys",
        "annotation",
        "max_bytes",
        "root",
        "step",
        "what",
        "workflow",
    )

    def __init__(
        self,
        annotation: Any,
        what: str,
        *,
        max_bytes: int,
        root: str = "value",
        workflow: str | None = None,
        step: str | None = None,
    ) -> None:
        self.annotation = annotation
        self.what = what
        self.max_bytes = max_bytes
        self.root = root
        self.workflow = workflow
        self.step = step
        try:
            try:
                self._adapter = _adapter(annotation)
            except TypeError:  # unhashable annotation (rare): build one uncached
                self._adapter = TypeAdapter(annotation)
            self._typed_keys = annotation_has_typed_keys(annotation)
        except (PydanticUserError, TypeError, NameError) as exc:
            raise SerializationError(
                f"the {what} is annotated {_type_name(annotation)}, which pydantic cannot turn "
                f"into JSON ({str(exc).splitlines()[0]}); annotate it with a pydantic model, a "
                "dataclass or JSON builtins",
                what=what,
                type_name=_type_name(annotation),
                workflow=workflow,
                step=step,
            ) from exc

    def dumps(self, value: Any) -> str:
        problem = find_problem(value, self.root, typed_keys=self._typed_keys)
        if problem is not None:
            raise self._refused(
                value, f"{problem.path} {problem.problem}; {problem.fix}", path=problem.path
            )
        try:
            data = self._adapter.dump_json(value, warnings=False)
        except (PydanticSerializationError, ValueError, TypeError) as exc:
            raise self._refused(
                value,
                f"a value of type {type(value).__qualname__} is not JSON for annotation "
                f"{_type_name(self.annotation)} ({exc}); return a pydantic model, a dataclass "
                "or JSON builtins",
            ) from exc
        if b"\\u0000" in data:  # a custom serializer wrote a NUL after all
            problem = find_problem(json.loads(data), self.root, typed_keys=True)
            if problem is not None:
                raise self._refused(
                    value, f"{problem.path} {problem.problem}; {problem.fix}", path=problem.path
                )
        if len(data) > self.max_bytes:
            raise PayloadTooLarge(
                f"the {self.what} is {len(data)} bytes as JSON, over the limit of "
                f"{self.max_bytes} (DURABLEFLOW_MAX_PAYLOAD_BYTES); store large data as an "
                "artefact and pass its key",
                what=self.what,
                type_name=type(value).__qualname__,
                workflow=self.workflow,
                step=self.step,
            )
        return data.decode()

    def _refused(self, value: Any, detail: str, *, path: str | None = None) -> SerializationError:
        return SerializationError(
            f"cannot store the {self.what}: {detail}",
            what=self.what,
            type_name=type(value).__qualname__,
            path=path,
            workflow=self.workflow,
            step=self.step,
        )

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
        where = "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]
        )
        path = f"{self.root}{where}"
        return SerializationError(
            f"the {self.what} does not match its annotation {_type_name(self.annotation)}: "
            f"{first['msg']} (at {path})",
            what=self.what,
            type_name=_type_name(self.annotation),
            path=path,
            workflow=self.workflow,
            step=self.step,
        )


def check_key(value: str | None, what: str, *, workflow: str | None = None) -> None:
    """An idempotency key or correlation id: at most 512 UTF-8 bytes, no NUL, encodable."""
    if value is None:
        return
    problem = None
    fix = "use plain text"
    if not isinstance(value, str):
        problem = f"is a {type(value).__name__}, not a string"
    elif "\x00" in value:
        problem = "contains U+0000 (NUL), which Postgres cannot store"
    else:
        try:
            size = len(value.encode("utf-8"))
        except UnicodeEncodeError:
            problem = "contains a lone surrogate, which is not valid UTF-8"
        else:
            if size > MAX_KEY_BYTES:
                problem = f"is {size} bytes long in UTF-8, over the limit of {MAX_KEY_BYTES}"
                fix = "use a shorter one, for example a hash of the long one"
    if problem is not None:
        raise SerializationError(
            f"the {what} {problem}; {fix}",
            what=what,
            type_name=type(value).__qualname__,
            workflow=workflow,
        )


def _safe_text(text: str) -> str:
    """Diagnostic text Postgres can store: NUL and lone surrogates escaped, visibly."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


MAX_ERROR_TEXT = 64 * 1024
"""Most characters of an error's message, and of its traceback, that are recorded."""


def _bounded(text: str) -> str:
    """``text``, or its head and tail around a visible marker when it is too long: an
    error is recorded in the same statement as the step's outcome, and a message of
    hundreds of megabytes would get that statement refused."""
    if len(text) <= MAX_ERROR_TEXT:
        return text
    half = MAX_ERROR_TEXT // 2
    cut = len(text) - 2 * half
    return f"{text[:half]}\n[... {cut} characters cut by durableflow ...]\n{text[-half:]}"


def _type_text(cls: type) -> str:
    try:
        return f"{cls.__module__}.{cls.__qualname__}"
    except Exception:  # a class that tampered with its own names
        return object.__repr__(cls)


def _message_text(exc: BaseException) -> str:
    """``str(exc)``; an exception whose ``__str__`` raises is still recorded."""
    try:
        return str(exc)
    except Exception:
        try:
            return f"<unprintable {type(exc).__qualname__}: {exc!r}>"
        except Exception:
            return f"<unprintable {_type_text(type(exc))}>"


def _traceback_text(exc: BaseException) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except Exception:
        return f"<traceback unavailable: formatting {_type_text(type(exc))} failed>"


def describe_error(exc: BaseException) -> dict[str, Any]:
    """The recorded form of an exception: type, message, traceback (JSON-safe).

    A ``NonRetryable`` wrapping another exception is recorded as the wrapped one (with
    ``"non_retryable": true``), so ``StepFailed.error_type`` names the real cause.
    Message and traceback are diagnostics, not data: NUL characters and lone surrogates
    in them are escaped, each is cut to ``MAX_ERROR_TEXT`` characters (head and tail
    kept) and an exception whose ``__str__`` raises gets a stand-in message, so that
    the error can always be recorded. It never raises (``Exception``).
    """
    recorded: BaseException = exc
    extra: dict[str, Any] = {}
    if isinstance(exc, NonRetryable):
        extra["non_retryable"] = True
        if exc.cause is not None:
            recorded = exc.cause
    return {
        "type": _safe_text(_type_text(type(recorded))),
        "message": _safe_text(_bounded(_message_text(recorded))),
        "traceback": _safe_text(_bounded(_traceback_text(exc))),
        **extra,
    }


def error_json(exc: BaseException) -> str:
    return json.dumps(describe_error(exc))
