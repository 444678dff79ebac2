"""Storage keys: the rules every key obeys, and the execution path convention.

A key is a ``/``-separated relative path such as
``executions/0192.../ingest/fetch/msg-7.json``. Keys are checked where they enter the
library, before any I/O, so a rejected key (``StorageKeyError``) has written nothing.

The rules, and why each exists:

- no empty key, no empty segment (``a//b``, a trailing ``/``): S3 would store them
  literally while a filesystem collapses them, so the same key would name different
  objects on different providers;
- no ``.`` or ``..`` segment and no leading ``/``: they would escape or alias the root;
- no backslash, NUL or control character: they are path separators or terminators on
  some systems and unprintable in logs;
- at most ``MAX_KEY_BYTES`` UTF-8 bytes in all and ``MAX_SEGMENT_BYTES`` per segment: S3
  keys stop at 1,024 bytes (the sidecar adds ``.meta.json``) and file names at 255;
- no key may end with ``.meta.json`` (that name belongs to the sidecar) and no segment
  may start with ``.durableflow-`` (the library's temporary files).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from durableflow.errors import StorageKeyError

SIDECAR_SUFFIX = ".meta.json"
"""Suffix of the JSON sidecar stored beside every object (``<key>.meta.json``)."""

SCRATCH_PREFIX = ".durableflow-"
"""Names starting with this are the library's temporary files; keys may not use it."""

MAX_KEY_BYTES = 1000
"""Longest key, in UTF-8 bytes (S3 allows 1,024 and the sidecar adds 10)."""

MAX_SEGMENT_BYTES = 200
"""Longest segment, in UTF-8 bytes (file names stop at 255; sidecars and temp names add)."""

EXECUTIONS_ROOT = "executions"
"""First segment of every execution artefact key."""

_EXTENSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")


def _segment_problem(segment: str) -> str | None:
    """Why ``segment`` cannot be part of a key, or None when it can."""
    if segment == "":
        return "it has an empty segment (a leading, trailing or doubled '/')"
    if segment in {".", ".."}:
        return f"segment {segment!r} is a relative path component; name the object directly"
    if segment.startswith(SCRATCH_PREFIX):
        return f"segments starting with {SCRATCH_PREFIX!r} are reserved for temporary files"
    if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
        return f"segment {segment[:40]!r}... is longer than {MAX_SEGMENT_BYTES} UTF-8 bytes"
    return None


def _text_problem(text: str) -> str | None:
    """Characters no key or prefix may contain."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, as undecodable bytes of argv arrive
        return "it is not valid UTF-8"
    if "\\" in text:
        return "it contains a backslash; use '/' to separate segments"
    for char in text:
        # Category Cc covers NUL, C0 (tab, newline...), DEL and the C1 range.
        if unicodedata.category(char) == "Cc":
            return f"it contains the control character {char!r}"
    if size > MAX_KEY_BYTES:
        return f"it is longer than {MAX_KEY_BYTES} UTF-8 bytes"
    return None


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid storage key, else raise ``StorageKeyError``.

    Example::

        validate_key("executions/run-1/main/fetch/msg-1.json")   # returned unchanged
        validate_key("../etc/passwd")                            # StorageKeyError
    """
    if not isinstance(key, str):
        raise StorageKeyError(repr(key), f"a key must be a str, not {type(key).__name__}")
    if key == "":
        raise StorageKeyError(key, "it is empty")
    if key.startswith("/"):
        raise StorageKeyError(key, "it is absolute; keys are relative to the storage root")
    problem = _text_problem(key)
    if problem is None:
        for segment in key.split("/"):
            problem = _segment_problem(segment)
            if problem is not None:
                break
    if problem is None and key.endswith(SIDECAR_SUFFIX):
        problem = f"keys ending in {SIDECAR_SUFFIX!r} are reserved for sidecars"
    if problem is not None:
        raise StorageKeyError(key, problem)
    return key


def validate_prefix(prefix: object) -> str:
    """Return the normalised listing prefix (no trailing ``/``); ``""`` means everything.

    A prefix names a folder of keys: ``executions/run-1`` covers
    ``executions/run-1/...`` but not ``executions/run-10/...``.
    """
    if not isinstance(prefix, str):
        raise StorageKeyError(repr(prefix), f"a prefix must be a str, not {type(prefix).__name__}")
    if prefix == "":
        return ""
    if prefix.startswith("/"):
        raise StorageKeyError(prefix, "it is absolute; prefixes are relative to the storage root")
    trimmed = prefix[:-1] if prefix.endswith("/") else prefix
    problem = _text_problem(trimmed)
    if problem is None:
        for segment in trimmed.split("/"):
            problem = _segment_problem(segment)
            if problem is not None:
                break
    if problem is not None:
        raise StorageKeyError(prefix, problem)
    return trimmed


def key_is_under(key: str, prefix: str) -> bool:
    """True when ``key`` lies in the folder ``prefix`` (already normalised)."""
    return prefix == "" or key.startswith(prefix + "/")


def sidecar_key(key: str) -> str:
    """The sidecar's key for an object key."""
    return key + SIDECAR_SUFFIX


@dataclass(frozen=True)
class ExecutionPath:
    """The parts of an execution artefact key.

    ``extension`` has no leading dot and may itself contain dots (``tar.gz``).
    """

    execution_id: str
    route_id: str
    stage: str
    message_id: str
    extension: str | None = None

    @property
    def key(self) -> str:
        """The storage key these parts name."""
        name = self.message_id if self.extension is None else f"{self.message_id}.{self.extension}"
        return f"{EXECUTIONS_ROOT}/{self.execution_id}/{self.route_id}/{self.stage}/{name}"


class ExecutionPathResolver:
    """Builds and parses ``executions/<execution-id>/<route-id>/<stage-name>/<message-id>[.ext]``.

    Replay finds an execution's stage outputs by this layout alone, so every producer must
    write through it: a key built by hand that differs by one segment is an artefact replay
    will never see. Message ids may not contain ``.`` (the extension starts at the first
    dot); the other parts may, but none may contain ``/``.

    Example::

        resolver = ExecutionPathResolver()
        key = resolver.key("run-1", "main", "fetch", "msg-7", extension="json")
        # 'executions/run-1/main/fetch/msg-7.json'
        resolver.parse(key).stage   # 'fetch'
    """

    def key(
        self,
        execution_id: str,
        route_id: str,
        stage: str,
        message_id: str,
        *,
        extension: str | None = None,
    ) -> str:
        """The key of one message's artefact at one stage of an execution."""
        for label, value in (
            ("execution id", execution_id),
            ("route id", route_id),
            ("stage name", stage),
            ("message id", message_id),
        ):
            self._check_part(label, value)
        if "." in message_id:
            raise StorageKeyError(
                message_id,
                "a message id may not contain '.', because the extension starts at the "
                "first dot; pass the extension separately",
            )
        if extension is not None:
            extension = extension.removeprefix(".")
            if not _EXTENSION.fullmatch(extension):
                raise StorageKeyError(
                    extension,
                    "an extension is 1-32 letters, digits or '_.+-' and starts with a "
                    "letter or digit (for example 'json' or 'tar.gz')",
                )
        path = ExecutionPath(execution_id, route_id, stage, message_id, extension)
        return validate_key(path.key)

    def execution_prefix(self, execution_id: str) -> str:
        """The prefix holding every artefact of one execution (for listing and pruning)."""
        self._check_part("execution id", execution_id)
        return f"{EXECUTIONS_ROOT}/{execution_id}"

    def stage_prefix(self, execution_id: str, route_id: str, stage: str) -> str:
        """The prefix holding one stage's artefacts of one execution and route."""
        for label, value in (
            ("execution id", execution_id),
            ("route id", route_id),
            ("stage name", stage),
        ):
            self._check_part(label, value)
        return f"{EXECUTIONS_ROOT}/{execution_id}/{route_id}/{stage}"

    def parse(self, key: str) -> ExecutionPath:
        """Split an execution artefact key into its parts, or raise ``StorageKeyError``."""
        validate_key(key)
        segments = key.split("/")
        if len(segments) != 5 or segments[0] != EXECUTIONS_ROOT:
            raise StorageKeyError(
                key,
                f"it does not follow {EXECUTIONS_ROOT}/<execution-id>/<route-id>/"
                "<stage-name>/<message-id>[.ext]",
            )
        _, execution_id, route_id, stage, name = segments
        message_id, dot, extension = name.partition(".")
        if message_id == "":
            raise StorageKeyError(key, "its message id is empty")
        return ExecutionPath(execution_id, route_id, stage, message_id, extension if dot else None)

    def try_parse(self, key: str) -> ExecutionPath | None:
        """Like ``parse`` but returns None for keys outside the convention."""
        try:
            return self.parse(key)
        except StorageKeyError:
            return None

    @staticmethod
    def _check_part(label: str, value: object) -> None:
        if not isinstance(value, str) or value == "":
            raise StorageKeyError(repr(value), f"the {label} must be a non-empty str")
        if "/" in value:
            raise StorageKeyError(value, f"the {label} may not contain '/'")
        problem = _text_problem(value) or _segment_problem(value)
        if problem is not None:
            raise StorageKeyError(value, f"the {label} is not a valid key segment: {problem}")
