"""The storage conformance suite: the same checks for every ``StorageProtocol`` provider.

durableflow runs it over its memory, filesystem and S3 providers; run it over yours::

    import pytest
    from durableflow.testing.storage_conformance import StorageConformanceSuite, StorageHarness

    class TestMyStorage(StorageConformanceSuite):
        @pytest.fixture
        async def storage_harness(self):
            provider = MyProvider(...)
            yield StorageHarness(provider, put_raw_object=provider.put_bytes_without_sidecar)

Each check is also a plain coroutine function in ``CONFORMANCE_CHECKS``, and
``run_storage_conformance(harness)`` runs them all without pytest. Checks write under a
fresh ``conformance/<uuid>`` prefix, so a shared bucket is fine. ``put_raw_object``
(store bytes under a key without touching its sidecar) lets the suite simulate a crash
between object and sidecar; without it those checks are skipped.
"""

from __future__ import annotations

import hashlib
import unittest
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from durableflow.errors import (
    ArtefactNotFound,
    StorageError,
    StorageIntegrityError,
    StorageKeyError,
)
from durableflow.storage.keys import MAX_KEY_BYTES, SIDECAR_SUFFIX, ExecutionPathResolver
from durableflow.storage.metadata import SIDECAR_SCHEMA_VERSION, StorageMetadata
from durableflow.storage.protocol import StorageProtocol

RawWriter = Callable[[str, bytes], Awaitable[None]]


@dataclass
class StorageHarness:
    """A provider under test, plus an optional back door for crash simulation.

    ``put_raw_object(key, data)`` must store ``data`` as the object under ``key`` through
    the backend directly, leaving the sidecar as it is (or absent).
    """

    provider: StorageProtocol
    put_raw_object: RawWriter | None = None


CheckFunction = Callable[[StorageHarness], Awaitable[None]]


class _SourceFailed(RuntimeError):
    """Raised by a test stream to simulate a producer failing mid-write."""


@contextmanager
def _expect(error: type[BaseException]) -> Iterator[None]:
    try:
        yield
    except error:
        return
    raise AssertionError(f"expected {error.__name__} to be raised")


def _base() -> str:
    return f"conformance/{uuid.uuid4().hex}"


def _raw_writer(harness: StorageHarness) -> RawWriter:
    if harness.put_raw_object is None:
        raise unittest.SkipTest("the harness has no put_raw_object; cannot simulate a crash")
    return harness.put_raw_object


async def _collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [item async for item in iterator]


async def _chunks(parts: list[bytes], fail_after: int | None = None) -> AsyncIterator[bytes]:
    for index, part in enumerate(parts):
        if fail_after is not None and index == fail_after:
            raise _SourceFailed("the producer failed mid-stream")
        yield part


async def check_write_then_read(harness: StorageHarness) -> None:
    """Bytes written come back identical; the result carries their sha256 and size."""
    storage = harness.provider
    key = f"{_base()}/object.bin"
    data = bytes(range(256)) * 8
    stored = await storage.write(key, data)
    assert stored.key == key
    assert stored.size == len(data)
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert await storage.read(key) == data
    assert await storage.exists(key)


async def check_library_completes_the_sidecar(harness: StorageHarness) -> None:
    """The sidecar gets sha256, size, schema version, time, worker, type and key parts."""
    storage = harness.provider
    execution_id = uuid.uuid4().hex
    key = ExecutionPathResolver().key(execution_id, "main", "fetch", "msg-1", extension="json")
    stored = await storage.write(key, b'{"a": 1}', StorageMetadata(step_name="fetch"))
    metadata = await storage.read_metadata(key)
    assert metadata == stored.metadata
    assert metadata.sha256 == hashlib.sha256(b'{"a": 1}').hexdigest()
    assert metadata.size == 8
    assert metadata.schema_version == SIDECAR_SCHEMA_VERSION
    assert metadata.written_at is not None
    assert metadata.worker
    assert metadata.content_type == "application/json"
    assert (metadata.execution_id, metadata.route_id, metadata.stage, metadata.message_id) == (
        execution_id,
        "main",
        "fetch",
        "msg-1",
    )
    assert metadata.step_name == "fetch"
    await storage.delete_prefix(ExecutionPathResolver().execution_prefix(execution_id))


async def check_provenance_and_custom_fields_round_trip(harness: StorageHarness) -> None:
    """Every caller-given field, custom fields included, is read back unchanged."""
    storage = harness.provider
    key = f"{_base()}/with-metadata.json"
    given = StorageMetadata(
        execution_id="exec-1",
        route_id="route-a",
        stage="parse",
        message_id="m-9",
        step_name="parse_page",
        worker="worker-7",
        config_hash="c" * 16,
        code_hash="d" * 16,
        lineage_id="lineage-42",
        content_type="application/x-custom",
        custom={"rows": 120, "tags": ["a", "b"], "nested": {"ok": True, "none": None}},
    )
    await storage.write(key, b"payload", given)
    metadata = await storage.read_metadata(key)
    for field in (
        "execution_id",
        "route_id",
        "stage",
        "message_id",
        "step_name",
        "worker",
        "config_hash",
        "code_hash",
        "lineage_id",
        "content_type",
        "custom",
    ):
        assert getattr(metadata, field) == getattr(given, field), field


async def check_metadata_contradicting_the_key_is_refused(harness: StorageHarness) -> None:
    """A sidecar claiming another execution than its key is refused before any write."""
    storage = harness.provider
    execution_id = uuid.uuid4().hex
    key = ExecutionPathResolver().key(execution_id, "main", "fetch", "msg-1")
    with _expect(StorageError):
        await storage.write(key, b"x", StorageMetadata(execution_id="someone-else"))
    assert not await storage.exists(key)
    assert await _collect(storage.list(f"executions/{execution_id}")) == []


async def check_overwrite_replaces_object_and_sidecar(harness: StorageHarness) -> None:
    """Writing a key again replaces both the bytes and the sidecar."""
    storage = harness.provider
    key = f"{_base()}/versioned.txt"
    await storage.write(key, b"version one", StorageMetadata(config_hash="one"))
    await storage.write(key, b"v2", StorageMetadata(config_hash="two"))
    assert await storage.read(key) == b"v2"
    metadata = await storage.read_metadata(key)
    assert (metadata.config_hash, metadata.size) == ("two", 2)


async def check_empty_object(harness: StorageHarness) -> None:
    """A zero-byte object is an object."""
    storage = harness.provider
    key = f"{_base()}/empty"
    stored = await storage.write(key, b"")
    assert stored.size == 0
    assert await storage.read(key) == b""
    assert b"".join(await _collect(storage.read_stream(key))) == b""


async def check_unicode_and_spaces_in_keys(harness: StorageHarness) -> None:
    """Keys may hold any printable Unicode, spaces included."""
    storage = harness.provider
    base = _base()
    key = f"{base}/données d'entrée/résumé 💾.txt"
    await storage.write(key, "é".encode())
    assert await storage.read(key) == "é".encode()
    assert await _collect(storage.list(base)) == [key]


async def check_missing_keys(harness: StorageHarness) -> None:
    """A key never written is absent to every operation."""
    storage = harness.provider
    key = f"{_base()}/never-written"
    assert not await storage.exists(key)
    with _expect(ArtefactNotFound):
        await storage.read(key)
    with _expect(ArtefactNotFound):
        await storage.read_metadata(key)
    with _expect(ArtefactNotFound):
        await _collect(storage.read_stream(key))
    assert await storage.delete(key) is False


BAD_KEY_SUFFIXES = (
    "..",
    "../escape",
    "a/../../escape",
    "./here",
    "a//b",
    "trailing/",
    "back\\slash",
    "nul\x00byte",
    "new\nline",
    "tab\there",
    "bell\x07",
    "del\x7f",
    "c1\x85",
    "x" * (MAX_KEY_BYTES + 1),
    "object" + SIDECAR_SUFFIX,
    ".durableflow-scratch.tmp",
)


async def check_bad_keys_are_refused_and_write_nothing(harness: StorageHarness) -> None:
    """Every bad key class raises StorageKeyError from every operation; nothing appears."""
    storage = harness.provider
    base = _base()
    bad_keys = [f"{base}/{suffix}" for suffix in BAD_KEY_SUFFIXES]
    bad_keys += ["", "/absolute/path", f"/{base}/x"]
    for key in bad_keys:
        with _expect(StorageKeyError):
            await storage.write(key, b"must not be written")
        with _expect(StorageKeyError):
            await storage.write_stream(key, _chunks([b"must not be written"]))
        with _expect(StorageKeyError):
            await storage.read(key)
        with _expect(StorageKeyError):
            await storage.read_metadata(key)
        with _expect(StorageKeyError):
            await storage.exists(key)
        with _expect(StorageKeyError):
            await storage.delete(key)
        with _expect(StorageKeyError):
            await _collect(storage.read_stream(key))
    with _expect(StorageKeyError):
        await storage.write(123, b"x")  # type: ignore[arg-type]
    assert await _collect(storage.list(base)) == []
    with _expect(StorageKeyError):
        await _collect(storage.list("../outside"))


async def check_list_covers_one_folder(harness: StorageHarness) -> None:
    """list(prefix) yields the objects under that folder, recursively, never sidecars."""
    storage = harness.provider
    base = _base()
    inside = [f"{base}/a/1.json", f"{base}/a/2.json", f"{base}/a/sub/3.json"]
    outside = [f"{base}/ab/4.json", f"{base}/a.json"]
    for key in inside + outside:
        await storage.write(key, key.encode())
    listing = storage.list(f"{base}/a")
    assert hasattr(listing, "__anext__"), "list() must return an async iterator"
    assert sorted(await _collect(listing)) == sorted(inside)
    assert sorted(await _collect(storage.list(f"{base}/a/"))) == sorted(inside)
    everything = await _collect(storage.list(base))
    assert sorted(everything) == sorted(inside + outside)
    assert not any(key.endswith(SIDECAR_SUFFIX) for key in everything)
    assert await _collect(storage.list(f"{base}/nothing-here")) == []


async def check_delete_removes_object_and_sidecar(harness: StorageHarness) -> None:
    """delete() leaves neither the object nor the sidecar behind."""
    storage = harness.provider
    base = _base()
    key = f"{base}/doomed.bin"
    await storage.write(key, b"bytes")
    assert await storage.delete(key) is True
    assert not await storage.exists(key)
    with _expect(ArtefactNotFound):
        await storage.read_metadata(key)
    assert await _collect(storage.list(base)) == []
    assert await storage.delete(key) is False


async def check_delete_prefix(harness: StorageHarness) -> None:
    """delete_prefix() removes one folder, counts its objects and spares its neighbours."""
    storage = harness.provider
    base = _base()
    for index in range(5):
        await storage.write(f"{base}/run/{index % 2}/{index}", b"x")
    await storage.write(f"{base}/run-neighbour/keep", b"x")
    await storage.write(f"{base}/run.keep", b"x")
    assert await storage.delete_prefix(f"{base}/run") == 5
    assert sorted(await _collect(storage.list(base))) == [
        f"{base}/run-neighbour/keep",
        f"{base}/run.keep",
    ]
    assert await storage.delete_prefix(f"{base}/run") == 0
    with _expect(StorageKeyError):
        await storage.delete_prefix("")


async def check_streamed_write_and_read(harness: StorageHarness) -> None:
    """write_stream/read_stream move several MiB in chunks and agree on the sha256."""
    storage = harness.provider
    key = f"{_base()}/large.bin"
    parts = [bytes([index]) * (1024 * 1024 + 17) for index in range(6)]
    whole = b"".join(parts)
    stored = await storage.write_stream(key, _chunks(parts), StorageMetadata(step_name="big"))
    assert stored.size == len(whole)
    assert stored.sha256 == hashlib.sha256(whole).hexdigest()
    metadata = await storage.read_metadata(key)
    assert (metadata.sha256, metadata.size) == (stored.sha256, stored.size)
    received = await _collect(storage.read_stream(key, chunk_size=512 * 1024))
    assert len(received) > 1
    assert b"".join(received) == whole
    assert await storage.read(key) == whole


async def check_failed_stream_leaves_nothing(harness: StorageHarness) -> None:
    """A producer failing mid-stream propagates its error and leaves no object."""
    storage = harness.provider
    base = _base()
    key = f"{base}/half.bin"
    parts = [b"a" * (1024 * 1024)] * 4
    with _expect(_SourceFailed):
        await storage.write_stream(key, _chunks(parts, fail_after=2))
    assert not await storage.exists(key)
    with _expect(ArtefactNotFound):
        await storage.read(key)
    assert await _collect(storage.list(base)) == []


async def check_failed_stream_keeps_the_previous_version(harness: StorageHarness) -> None:
    """A failed rewrite leaves the previous complete artefact readable."""
    storage = harness.provider
    key = f"{_base()}/kept.bin"
    await storage.write(key, b"previous")
    with _expect(_SourceFailed):
        await storage.write_stream(key, _chunks([b"new"] * 3, fail_after=1))
    assert await storage.read(key) == b"previous"


async def check_incomplete_write_is_reported(harness: StorageHarness) -> None:
    """An object whose sidecar never arrived is never returned as valid; a retry repairs it."""
    put_raw_object = _raw_writer(harness)
    storage = harness.provider
    key = f"{_base()}/crashed.bin"
    await put_raw_object(key, b"object bytes but no sidecar")
    assert not await storage.exists(key)
    with _expect(StorageIntegrityError):
        await storage.read(key)
    with _expect(StorageIntegrityError):
        await storage.read_metadata(key)
    with _expect(StorageIntegrityError):
        await _collect(storage.read_stream(key))
    await storage.write(key, b"retried")
    assert await storage.read(key) == b"retried"
    assert await storage.exists(key)


async def check_integrity_is_verified_on_read(harness: StorageHarness) -> None:
    """Bytes that no longer match the sidecar raise StorageIntegrityError on every read."""
    put_raw_object = _raw_writer(harness)
    storage = harness.provider
    key = f"{_base()}/tampered.bin"
    await storage.write(key, b"original bytes")
    # Same size, different content: only the sha256 can tell.
    await put_raw_object(key, b"ORIGINAL BYTES")
    with _expect(StorageIntegrityError):
        await storage.read(key)
    with _expect(StorageIntegrityError):
        await _collect(storage.read_stream(key, chunk_size=4))
    # A rewrite between object and sidecar (new object, old sidecar): the size differs.
    await put_raw_object(key, b"a newer, longer object")
    with _expect(StorageIntegrityError):
        await storage.read(key)
    with _expect(StorageIntegrityError):
        await _collect(storage.read_stream(key))


async def check_unknown_sidecar_fields_survive(harness: StorageHarness) -> None:
    """Fields this version does not know survive a read-modify-write."""
    storage = harness.provider
    key = f"{_base()}/future.json"
    future = StorageMetadata.model_validate(
        {"step_name": "produce", "added_in_v9": {"nested": [1, 2]}, "flag": True}
    )
    await storage.write(key, b"{}", future)
    read_back = await storage.read_metadata(key)
    assert read_back.model_extra == {"added_in_v9": {"nested": [1, 2]}, "flag": True}
    modified = read_back.model_copy(update={"lineage_id": "lineage-7"})
    await storage.write(key, await storage.read(key), modified)
    final = await storage.read_metadata(key)
    assert final.lineage_id == "lineage-7"
    assert final.step_name == "produce"
    assert final.model_extra == {"added_in_v9": {"nested": [1, 2]}, "flag": True}


CONFORMANCE_CHECKS: tuple[CheckFunction, ...] = (
    check_write_then_read,
    check_library_completes_the_sidecar,
    check_provenance_and_custom_fields_round_trip,
    check_metadata_contradicting_the_key_is_refused,
    check_overwrite_replaces_object_and_sidecar,
    check_empty_object,
    check_unicode_and_spaces_in_keys,
    check_missing_keys,
    check_bad_keys_are_refused_and_write_nothing,
    check_list_covers_one_folder,
    check_delete_removes_object_and_sidecar,
    check_delete_prefix,
    check_streamed_write_and_read,
    check_failed_stream_leaves_nothing,
    check_failed_stream_keeps_the_previous_version,
    check_incomplete_write_is_reported,
    check_integrity_is_verified_on_read,
    check_unknown_sidecar_fields_survive,
)
"""Every conformance check, in the order ``run_storage_conformance`` runs them."""


async def run_storage_conformance(harness: StorageHarness) -> list[str]:
    """Run every check against ``harness``; return the names of checks skipped.

    The first failing check raises its ``AssertionError`` (or the provider's error).
    """
    skipped: list[str] = []
    for check in CONFORMANCE_CHECKS:
        try:
            await check(harness)
        except unittest.SkipTest:
            skipped.append(check.__name__)
    return skipped


class StorageConformanceSuite:
    """pytest base class: subclass it as ``Test...`` and provide a ``storage_harness`` fixture.

    It holds one ``test_...`` method per entry of ``CONFORMANCE_CHECKS``.
    """


def _as_test(check: CheckFunction) -> Callable[..., Awaitable[None]]:
    async def test(self: StorageConformanceSuite, storage_harness: StorageHarness) -> None:
        await check(storage_harness)

    test.__name__ = "test_" + check.__name__.removeprefix("check_")
    test.__qualname__ = f"StorageConformanceSuite.{test.__name__}"
    test.__doc__ = check.__doc__
    return test


for _check in CONFORMANCE_CHECKS:
    _test = _as_test(_check)
    setattr(StorageConformanceSuite, _test.__name__, _test)
del _check, _test
