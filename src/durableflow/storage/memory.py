"""``MemoryStorageProvider`` (``memory://``): everything in a dict, for unit tests.

It keeps sidecars as JSON bytes, like the real providers, so a test against it goes
through the same parsing, completion and integrity checks.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator

from durableflow.storage.base import BaseStorageProvider
from durableflow.storage.events import StorageEventPublisher
from durableflow.storage.keys import SIDECAR_SUFFIX, key_is_under, sidecar_key
from durableflow.storage.metadata import StorageMetadata


class MemoryStorageProvider(BaseStorageProvider):
    """An in-process store; each instance starts empty and dies with the process.

    Example::

        storage = MemoryStorageProvider()
        await storage.write("executions/r1/main/fetch/m1.json", b"{}")
    """

    def __init__(
        self,
        *,
        events: StorageEventPublisher | None = None,
        event_publish_timeout: float = 2.0,
        owns_events: bool = False,
    ) -> None:
        super().__init__(
            events=events, event_publish_timeout=event_publish_timeout, owns_events=owns_events
        )
        self._blobs: dict[str, bytes] = {}
        # Sorted names let list() walk from the prefix onwards one name at a time, so
        # names added during a listing are seen, as with a paged remote listing.
        self._names: list[str] = []

    def _store(self, name: str, payload: bytes) -> None:
        if name not in self._blobs:
            bisect.insort(self._names, name)
        self._blobs[name] = payload

    def _remove(self, name: str) -> bool:
        if self._blobs.pop(name, None) is None:
            return False
        index = bisect.bisect_left(self._names, name)
        del self._names[index]
        return True

    async def _put_object(self, key: str, data: bytes, metadata: StorageMetadata) -> None:
        self._store(key, data)

    async def _put_object_stream(
        self, key: str, chunks: AsyncIterator[bytes], metadata: StorageMetadata
    ) -> None:
        # Collect first, publish once: a failing stream must leave the old object intact.
        parts = [chunk async for chunk in chunks]
        self._store(key, b"".join(parts))

    async def _put_sidecar(self, key: str, payload: bytes) -> None:
        self._store(sidecar_key(key), payload)

    async def _get_object_and_sidecar(self, key: str) -> tuple[bytes | None, bytes | None]:
        return self._blobs.get(key), self._blobs.get(sidecar_key(key))

    async def _get_sidecar(self, key: str) -> bytes | None:
        return self._blobs.get(sidecar_key(key))

    async def _open_object(
        self, key: str, chunk_size: int
    ) -> tuple[int, AsyncIterator[bytes]] | None:
        data = self._blobs.get(key)
        if data is None:
            return None

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(data), chunk_size):
                yield data[start : start + chunk_size]

        return len(data), chunks()

    async def _exists(self, key: str) -> tuple[bool, bool]:
        return key in self._blobs, sidecar_key(key) in self._blobs

    async def _iter_keys(self, prefix: str) -> AsyncIterator[str]:
        start = "" if prefix == "" else prefix + "/"
        last: str | None = None
        while True:
            # Re-find the position each time: the list may have changed while we yielded.
            if last is None:
                index = bisect.bisect_left(self._names, start)
            else:
                index = bisect.bisect_right(self._names, last)
            if index >= len(self._names) or not key_is_under(self._names[index], prefix):
                return
            last = self._names[index]
            yield last

    async def _delete(self, key: str) -> bool:
        removed_sidecar = self._remove(sidecar_key(key))
        removed_object = self._remove(key)
        return removed_sidecar or removed_object

    async def _delete_prefix(self, prefix: str) -> int:
        start = bisect.bisect_left(self._names, prefix + "/")
        end = start
        while end < len(self._names) and key_is_under(self._names[end], prefix):
            end += 1
        doomed = self._names[start:end]
        for name in doomed:
            del self._blobs[name]
        del self._names[start:end]
        return sum(1 for name in doomed if not name.endswith(SIDECAR_SUFFIX))

    def put_raw_object(self, key: str, data: bytes) -> None:
        """Store bytes under ``key`` without a sidecar, as a crash mid-write would.

        For tests of the incomplete-write and integrity paths only.
        """
        self._store(key, data)
