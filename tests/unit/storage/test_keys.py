"""Key rules and the execution path convention."""

from __future__ import annotations

import pytest

from durableflow.errors import StorageKeyError
from durableflow.storage import (
    MAX_KEY_BYTES,
    ExecutionPath,
    ExecutionPathResolver,
    MemoryStorageProvider,
    validate_key,
    validate_prefix,
)
from durableflow.storage.keys import MAX_SEGMENT_BYTES

BAD_KEYS = {
    "empty": ("", "empty"),
    "absolute": ("/etc/passwd", "absolute"),
    "parent segment": ("executions/../../etc/passwd", "relative path component"),
    "lone parent": ("..", "relative path component"),
    "current segment": ("a/./b", "relative path component"),
    "empty segment": ("a//b", "empty segment"),
    "trailing slash": ("a/b/", "empty segment"),
    "backslash": ("a\\b", "backslash"),
    "windows path": ("C:\\Windows\\system32", "backslash"),
    "NUL": ("a\x00b", "control character"),
    "newline": ("a\nb", "control character"),
    "carriage return": ("a\rb", "control character"),
    "escape": ("a\x1b[31m", "control character"),
    "DEL": ("a\x7f", "control character"),
    "C1 control": ("a\x9bb", "control character"),
    # What undecodable bytes of argv (durableflow lineage $'k\xff') become in Python.
    "lone surrogate": ("k\udcff", "not valid UTF-8"),
    "too long": ("k" * (MAX_KEY_BYTES + 1), "longer than"),
    "too long in UTF-8": ("é" * (MAX_KEY_BYTES // 2 + 1), "longer than"),
    "segment too long": ("a/" + "s" * (MAX_SEGMENT_BYTES + 1), "longer than"),
    "sidecar name": ("a/b.meta.json", "reserved for sidecars"),
    "scratch name": ("a/.durableflow-123.tmp", "reserved for temporary files"),
}


@pytest.mark.parametrize(("key", "reason"), BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_bad_keys_are_refused_with_the_reason(key: str, reason: str) -> None:
    with pytest.raises(StorageKeyError) as caught:
        validate_key(key)
    assert reason in caught.value.reason
    assert caught.value.key == key
    assert "invalid storage key" in str(caught.value)


@pytest.mark.parametrize("key", [None, 12, b"bytes/key"])
def test_non_string_keys_are_refused(key: object) -> None:
    with pytest.raises(StorageKeyError, match="must be a str"):
        validate_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "executions/r1/main/fetch/m1.json",
        "with space/and 'quotes'/ünïcødé 💾",
        "dots.in..names/v1..2",
        "a/.hidden",
        "/".join(["k" * 99] * 10),  # 999 bytes: just under the limit
    ],
)
def test_good_keys_pass_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(("key", "reason"), BAD_KEYS.values(), ids=BAD_KEYS.keys())
async def test_a_bad_key_writes_nothing(key: str, reason: str) -> None:
    storage = MemoryStorageProvider()
    with pytest.raises(StorageKeyError):
        await storage.write(key, b"data")
    assert [name async for name in storage.list()] == []


def test_prefixes() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("executions/r1/") == "executions/r1"
    assert validate_prefix("executions/r1") == "executions/r1"
    for bad in ("/abs", "a//b", "../up", "a\\b", "a\x00", "a/../b"):
        with pytest.raises(StorageKeyError):
            validate_prefix(bad)


def test_resolver_builds_and_parses_the_convention() -> None:
    resolver = ExecutionPathResolver()
    key = resolver.key("0192f0c1-run", "main", "fetch", "msg-7", extension="json")
    assert key == "executions/0192f0c1-run/main/fetch/msg-7.json"
    assert resolver.parse(key) == ExecutionPath("0192f0c1-run", "main", "fetch", "msg-7", "json")
    assert resolver.parse(key).key == key


def test_resolver_round_trips_without_and_with_compound_extensions() -> None:
    resolver = ExecutionPathResolver()
    for extension in (None, "json", ".json", "tar.gz"):
        key = resolver.key("run", "route", "stage.v2", "m1", extension=extension)
        parsed = resolver.parse(key)
        assert parsed.message_id == "m1"
        assert parsed.stage == "stage.v2"
        assert parsed.extension == (extension.lstrip(".") if extension else None)
        assert parsed.key == key


def test_resolver_prefixes() -> None:
    resolver = ExecutionPathResolver()
    assert resolver.execution_prefix("run") == "executions/run"
    assert resolver.stage_prefix("run", "main", "fetch") == "executions/run/main/fetch"
    key = resolver.key("run", "main", "fetch", "m")
    assert key.startswith(resolver.stage_prefix("run", "main", "fetch") + "/")


@pytest.mark.parametrize(
    ("parts", "reason"),
    [
        (("run/x", "main", "fetch", "m"), "may not contain '/'"),
        (("run", "", "fetch", "m"), "non-empty"),
        (("run", "main", "..", "m"), "relative path component"),
        (("run", "main", "fetch", "m.1"), "may not contain '.'"),
        (("run", "main", "fe\x00tch", "m"), "control character"),
        (("run", "main", "fetch", "m\\1"), "backslash"),
    ],
)
def test_resolver_refuses_bad_parts(parts: tuple[str, str, str, str], reason: str) -> None:
    with pytest.raises(StorageKeyError) as caught:
        ExecutionPathResolver().key(*parts)
    assert reason in caught.value.reason


@pytest.mark.parametrize("extension", ["", "/json", "js on", ".", "x" * 40, "-json"])
def test_resolver_refuses_bad_extensions(extension: str) -> None:
    with pytest.raises(StorageKeyError, match="extension"):
        ExecutionPathResolver().key("run", "main", "fetch", "m", extension=extension)


@pytest.mark.parametrize(
    "key",
    [
        "executions/run/main/fetch",
        "executions/run/main/fetch/m/extra",
        "artefacts/run/main/fetch/m",
        "executions/run/main/fetch/.json",
    ],
)
def test_parse_refuses_keys_outside_the_convention(key: str) -> None:
    resolver = ExecutionPathResolver()
    with pytest.raises(StorageKeyError):
        resolver.parse(key)
    assert resolver.try_parse(key) is None
