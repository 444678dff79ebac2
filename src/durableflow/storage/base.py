"""``BaseStorageProvider``: the behaviour all built-in providers share.

Key validation, sidecar completion, integrity checks, the order of writes (object,
then sidecar) and event publishing live here once; a backend only moves bytes. A crash
between the two writes leaves an object without a (matching) sidecar, which every read
reports as ``StorageIntegrityError`` and ``exists`` reports as absent; writing the key
again repairs it.
"""

from __future__ import annotations

import abc
import hashlib
import time
from collections.abc import AsyncIterable, AsyncIterator
from types import TracebackType
from typing import Self

from durableflow.errors import (
    ArtefactNotFound,
    StorageError,
    StorageIntegrityError,
    StorageKeyError,
)
from durableflow.storage.events import StorageEvent, StorageEventPublisher, publish_best_effort
from durableflow.storage.keys import (
    SCRATCH_PREFIX,
    SIDECAR_SUFFIX,
    ExecutionPathResolver,
    validate_key,
    validate_prefix,
)
from durableflow.storage.metadata import (
    StorageMetadata,
    StoredObject,
    prepare_metadata,
    verify_bytes,
    verify_digest,
)
from durableflow.storage.protocol import DEFAULT_READ_CHUNK_BYTES

_RESOLVER = ExecutionPathResolver()

EVENT_RETRY_AFTER_SECONDS = 5.0
"""After a failed publish, writes skip publishing for this long (the channel is down)."""

INCOMPLETE_REASON = (
    "the object has no sidecar: its write was interrupted before it finished; "
    "write the key again (writes to the same key are safe)"
)
ORPHAN_SIDECAR_REASON = (
    "its sidecar exists but the object does not (removed outside durableflow?); "
    "write the key again or delete it"
)


class _Digest:
    """Running sha256 and size of bytes passing through a stream."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0

    async def wrap(self, key: str, chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise StorageError(
                    f"write_stream({key!r}) got a {type(chunk).__name__} chunk; "
                    "chunks must be bytes"
                )
            if len(chunk) == 0:
                continue
            self.hasher.update(chunk)
            self.size += len(chunk)
            yield bytes(chunk)


class BaseStorageProvider(abc.ABC):
    """Implements ``StorageProtocol`` on top of a backend's byte-moving primitives.

    Subclasses implement the ``_``-prefixed abstract methods; all keys they receive are
    already validated. Providers are async context managers; ``aclose()`` releases
    their connections and threads (and the event channel they were built with, when
    they own it).
    """

    def __init__(
        self,
        *,
        events: StorageEventPublisher | None = None,
        event_publish_timeout: float = 2.0,
        owns_events: bool = False,
    ) -> None:
        self._events = events
        self._event_publish_timeout = event_publish_timeout
        self._owns_events = owns_events
        self._events_paused_until = 0.0

    # ------------------------------------------------------------------ public API

    async def write(
        self, key: str, data: bytes, metadata: StorageMetadata | None = None
    ) -> StoredObject:
        """Store ``data`` under ``key``: object first, then its sidecar, each atomically."""
        key = validate_key(key)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise StorageError(f"write({key!r}) needs bytes, not {type(data).__name__}")
        payload = bytes(data)
        sha256 = hashlib.sha256(payload).hexdigest()
        prepared = self._prepare(key, metadata, sha256=sha256, size=len(payload))
        await self._put_object(key, payload, prepared)
        await self._put_sidecar(key, prepared.to_sidecar_bytes())
        await self._announce(key, prepared)
        return StoredObject(key=key, size=len(payload), sha256=sha256, metadata=prepared)

    async def write_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        metadata: StorageMetadata | None = None,
    ) -> StoredObject:
        """Store the concatenated ``chunks`` without holding them all in memory."""
        key = validate_key(key)
        provisional = self._prepare(key, metadata, sha256=None, size=None)
        digest = _Digest()
        await self._put_object_stream(key, digest.wrap(key, chunks), provisional)
        sha256 = digest.hasher.hexdigest()
        final = provisional.model_copy(update={"sha256": sha256, "size": digest.size})
        await self._put_sidecar(key, final.to_sidecar_bytes())
        await self._announce(key, final)
        return StoredObject(key=key, size=digest.size, sha256=sha256, metadata=final)

    async def read(self, key: str) -> bytes:
        """The object's bytes, after checking them against the sidecar's size and sha256."""
        key = validate_key(key)
        data, sidecar = await self._get_object_and_sidecar(key)
        metadata = self._parse_sidecar(key, sidecar, object_present=data is not None)
        if data is None:
            raise StorageIntegrityError(key, ORPHAN_SIDECAR_REASON)
        verify_bytes(key, metadata, data)
        return data

    def read_stream(
        self, key: str, *, chunk_size: int = DEFAULT_READ_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """The object's bytes in chunks, sha256-checked when the stream ends."""
        key = validate_key(key)
        if not isinstance(chunk_size, int) or chunk_size <= 0:
            raise StorageError(f"chunk_size must be a positive int, not {chunk_size!r}")
        return self._read_stream(key, chunk_size)

    async def read_metadata(self, key: str) -> StorageMetadata:
        """The sidecar of ``key`` (unknown fields kept)."""
        key = validate_key(key)
        sidecar = await self._get_sidecar(key)
        if sidecar is None:
            object_present, _ = await self._exists(key)
            return self._parse_sidecar(key, None, object_present=object_present)
        return StorageMetadata.from_sidecar_bytes(key, sidecar)

    async def exists(self, key: str) -> bool:
        """True when the object and its sidecar are both stored."""
        key = validate_key(key)
        object_present, sidecar_present = await self._exists(key)
        return object_present and sidecar_present

    def list(self, prefix: str = "") -> AsyncIterator[str]:
        """Object keys in the folder ``prefix`` (never sidecars or temporary files)."""
        return self._list(validate_prefix(prefix))

    async def delete(self, key: str) -> bool:
        """Remove the sidecar, then the object; True if either existed."""
        return await self._delete(validate_key(key))

    async def delete_prefix(self, prefix: str) -> int:
        """Remove everything in the folder ``prefix``; returns how many objects went."""
        normalised = validate_prefix(prefix)
        if normalised == "":
            raise StorageKeyError(
                prefix,
                "an empty prefix would delete the whole store; name the folder to prune, "
                "for example executions/<execution-id>",
            )
        return await self._delete_prefix(normalised)

    async def aclose(self) -> None:
        """Release the backend's resources and an owned event channel."""
        try:
            await self._close()
        finally:
            events, self._events = self._events, None
            if self._owns_events and events is not None:
                closer = getattr(events, "aclose", None)
                if closer is not None:
                    await closer()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ shared steps

    @staticmethod
    def _prepare(
        key: str, metadata: StorageMetadata | None, *, sha256: str | None, size: int | None
    ) -> StorageMetadata:
        parsed = _RESOLVER.try_parse(key)
        parts = None
        if parsed is not None:
            parts = {
                "execution_id": parsed.execution_id,
                "route_id": parsed.route_id,
                "stage": parsed.stage,
                "message_id": parsed.message_id,
            }
        return prepare_metadata(key, metadata, sha256=sha256, size=size, execution_parts=parts)

    @staticmethod
    def _parse_sidecar(key: str, sidecar: bytes | None, *, object_present: bool) -> StorageMetadata:
        if sidecar is None:
            if object_present:
                raise StorageIntegrityError(key, INCOMPLETE_REASON)
            raise ArtefactNotFound(key)
        return StorageMetadata.from_sidecar_bytes(key, sidecar)

    async def _read_stream(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        metadata = await self.read_metadata(key)
        opened = await self._open_object(key, chunk_size)
        if opened is None:
            raise StorageIntegrityError(key, ORPHAN_SIDECAR_REASON)
        size, chunks = opened
        if metadata.size is not None and size != metadata.size:
            raise StorageIntegrityError(
                key, f"the object has {size} bytes but its sidecar records {metadata.size}"
            )
        hasher = hashlib.sha256()
        received = 0
        async for chunk in chunks:
            hasher.update(chunk)
            received += len(chunk)
            yield chunk
        verify_digest(key, metadata, size=received, sha256=hasher.hexdigest())

    async def _list(self, prefix: str) -> AsyncIterator[str]:
        async for key in self._iter_keys(prefix):
            name = key.rpartition("/")[2]
            if key.endswith(SIDECAR_SUFFIX) or name.startswith(SCRATCH_PREFIX):
                continue
            yield key

    async def _announce(self, key: str, metadata: StorageMetadata) -> None:
        if self._events is None:
            return
        now = time.monotonic()
        if now < self._events_paused_until:
            # The channel failed moments ago: skip rather than make every write wait out
            # the publish timeout while it is down. Events are hints; this one is lost.
            return
        published = await publish_best_effort(
            self._events,
            StorageEvent.from_metadata(key, metadata),
            timeout_seconds=self._event_publish_timeout,
        )
        if not published:
            self._events_paused_until = time.monotonic() + EVENT_RETRY_AFTER_SECONDS

    # ------------------------------------------------------------------ backend primitives

    @abc.abstractmethod
    async def _put_object(self, key: str, data: bytes, metadata: StorageMetadata) -> None:
        """Atomically replace the object's bytes (the sidecar is written after)."""

    @abc.abstractmethod
    async def _put_object_stream(
        self, key: str, chunks: AsyncIterator[bytes], metadata: StorageMetadata
    ) -> None:
        """Atomically replace the object with streamed bytes; on error leave no trace."""

    @abc.abstractmethod
    async def _put_sidecar(self, key: str, payload: bytes) -> None:
        """Atomically replace the sidecar of ``key``."""

    @abc.abstractmethod
    async def _get_object_and_sidecar(self, key: str) -> tuple[bytes | None, bytes | None]:
        """The object's bytes and the sidecar's bytes; None for what is missing."""

    @abc.abstractmethod
    async def _get_sidecar(self, key: str) -> bytes | None:
        """The sidecar's bytes, or None."""

    @abc.abstractmethod
    async def _open_object(
        self, key: str, chunk_size: int
    ) -> tuple[int, AsyncIterator[bytes]] | None:
        """The object's size and a chunk iterator, or None when it is missing."""

    @abc.abstractmethod
    async def _exists(self, key: str) -> tuple[bool, bool]:
        """Whether the object and the sidecar are stored."""

    @abc.abstractmethod
    def _iter_keys(self, prefix: str) -> AsyncIterator[str]:
        """Every stored name in the folder ``prefix`` (sidecars too), page by page."""

    @abc.abstractmethod
    async def _delete(self, key: str) -> bool:
        """Remove the sidecar, then the object; True if either existed."""

    @abc.abstractmethod
    async def _delete_prefix(self, prefix: str) -> int:
        """Remove everything in the folder ``prefix``; the number of objects removed."""

    async def _close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release backend resources (nothing by default)."""
