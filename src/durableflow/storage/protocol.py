"""``StorageProtocol``: what every artefact store provides.

A ``typing.Protocol``, so a third-party provider needs no import from durableflow to
satisfy it; ``durableflow.testing.storage_conformance`` checks that it behaves.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Protocol, runtime_checkable

from durableflow.storage.metadata import StorageMetadata, StoredObject

DEFAULT_READ_CHUNK_BYTES = 1024 * 1024
"""Chunk size ``read_stream`` yields when the caller does not choose one."""


@runtime_checkable
class StorageProtocol(Protocol):
    """An artefact store: objects under keys, each with a JSON sidecar.

    Contract (the conformance suite checks each point):

    - ``write`` stores the bytes and then the sidecar, each atomically, and returns the
      completed sidecar; the library computes ``sha256`` and ``size``.
    - ``read`` returns the bytes only if they match the sidecar; otherwise it raises
      ``StorageIntegrityError`` (also when the sidecar is missing: the write was
      interrupted). A missing key raises ``ArtefactNotFound``.
    - ``exists`` is True only for a complete artefact (object and sidecar).
    - ``list(prefix)`` yields object keys (never sidecars) in the folder ``prefix``,
      lazily: it never holds the whole listing. ``prefix=""`` lists everything.
    - Keys are validated before any I/O; a bad key raises ``StorageKeyError``.

    Example::

        storage: StorageProtocol = create_storage_provider("file:///var/artefacts")
        stored = await storage.write("executions/r1/main/fetch/m1.json", b"{}")
        assert await storage.read(stored.key) == b"{}"
    """

    async def write(
        self, key: str, data: bytes, metadata: StorageMetadata | None = None
    ) -> StoredObject:
        """Store ``data`` under ``key`` with its sidecar; overwrite what was there."""
        ...

    async def write_stream(
        self,
        key: str,
        chunks: AsyncIterable[bytes],
        metadata: StorageMetadata | None = None,
    ) -> StoredObject:
        """Store the concatenated ``chunks`` without holding them all in memory.

        If ``chunks`` raises, nothing becomes visible under ``key`` and the error
        propagates.
        """
        ...

    async def read(self, key: str) -> bytes:
        """The object's bytes, checked against its sidecar."""
        ...

    def read_stream(
        self, key: str, *, chunk_size: int = DEFAULT_READ_CHUNK_BYTES
    ) -> AsyncIterator[bytes]:
        """The object's bytes in chunks; the sha256 is checked when the stream ends.

        A mismatch raises ``StorageIntegrityError`` after the last chunk, so consumers
        must finish the iteration before trusting what they received.
        """
        ...

    async def read_metadata(self, key: str) -> StorageMetadata:
        """The object's sidecar, unknown fields included."""
        ...

    async def exists(self, key: str) -> bool:
        """True when both the object and its sidecar are stored."""
        ...

    def list(self, prefix: str = "") -> AsyncIterator[str]:
        """Object keys under ``prefix``, produced page by page."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the sidecar, then the object; True if anything was removed."""
        ...

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object (and sidecar) under a non-empty ``prefix``; returns objects."""
        ...
