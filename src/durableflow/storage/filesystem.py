"""``FilesystemStorageProvider`` (``file://<path>``): objects and sidecars as files.

Each write goes to a temporary file in the target folder, is fsynced and renamed over
the object; then the sidecar ``<key>.meta.json`` the same way; then the folder is
fsynced so both renames survive a power cut. A crash at any point leaves either the
previous state or an object whose sidecar is missing or stale, which reads report as
``StorageIntegrityError``; it never leaves a partial file under a key's name.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import BinaryIO, TypeVar

from durableflow.errors import StorageError, StorageKeyError
from durableflow.storage import _fs_io
from durableflow.storage.base import BaseStorageProvider
from durableflow.storage.events import StorageEventPublisher
from durableflow.storage.metadata import StorageMetadata

_T = TypeVar("_T")

DEFAULT_IO_THREADS = 8
"""Threads a filesystem provider uses for blocking file calls."""


def _describe(exc: OSError) -> str:
    if isinstance(exc, NotADirectoryError | FileExistsError):
        return "a leading part of the key is already an object, so it cannot be a folder"
    if isinstance(exc, IsADirectoryError):
        return "the key is a folder holding other keys, so it cannot also be an object"
    return f"{exc.__class__.__name__}: {exc}"


class FilesystemStorageProvider(BaseStorageProvider):
    """Stores objects as files under a root folder, each beside its JSON sidecar.

    The root is created on first use. Keys that resolve outside it (through a symlink
    inside the root) are refused with ``StorageKeyError``. One key cannot be both an
    object and a folder of other keys (``a/b`` and ``a/b/c``), unlike on S3.

    Example::

        async with FilesystemStorageProvider("/var/lib/app/artefacts") as storage:
            await storage.write("executions/r1/main/fetch/m1.json", b"{}")
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        io_threads: int = DEFAULT_IO_THREADS,
        events: StorageEventPublisher | None = None,
        event_publish_timeout: float = 2.0,
        owns_events: bool = False,
    ) -> None:
        super().__init__(
            events=events, event_publish_timeout=event_publish_timeout, owns_events=owns_events
        )
        self._root = os.path.abspath(os.fspath(root))
        self._root_real: str | None = None
        self._io_threads = io_threads
        self._executor: ThreadPoolExecutor | None = None

    @property
    def root(self) -> str:
        """The root folder (absolute, as given)."""
        return self._root

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self._io_threads, thread_name_prefix="durableflow-storage-fs"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(function, *args))

    async def _root_path(self) -> str:
        if self._root_real is None:
            try:
                self._root_real = await self._run(_fs_io.prepare_root, self._root)
            except OSError as exc:
                raise StorageError(
                    f"cannot use {self._root} as the storage root ({exc}); check the path in "
                    "DURABLEFLOW_STORAGE_URL and its permissions"
                ) from exc
        return self._root_real

    async def _io(self, action: str, key: str, function: Callable[..., _T], *args: object) -> _T:
        """Run one blocking step (its first argument is the root), naming ``key`` on error."""
        root = await self._root_path()
        try:
            return await self._run(function, root, *args)
        except StorageKeyError:
            raise
        except OSError as exc:
            raise StorageError(
                f"could not {action} {key!r} under {self._root}: {_describe(exc)}"
            ) from exc

    async def _step(self, action: str, key: str, function: Callable[..., _T], *args: object) -> _T:
        """Run one blocking step that does not need the root."""
        try:
            return await self._run(function, *args)
        except OSError as exc:
            raise StorageError(
                f"could not {action} {key!r} under {self._root}: {_describe(exc)}"
            ) from exc

    async def _put_object(self, key: str, data: bytes, metadata: StorageMetadata) -> None:
        await self._io("write", key, _fs_io.write_object, key, data)

    async def _put_object_stream(
        self, key: str, chunks: AsyncIterator[bytes], metadata: StorageMetadata
    ) -> None:
        path, temp, handle = await self._io("write", key, _fs_io.open_temporary, key)
        committed = False
        try:
            async for chunk in chunks:
                await self._step("write", key, _fs_io.write_chunk, handle, chunk)
            await self._step("write", key, _fs_io.commit_temporary, handle, temp, path)
            committed = True
        finally:
            if not committed:
                # Shielded so a cancelled write still removes its temporary file.
                root = await self._root_path()
                await asyncio.shield(self._run(_fs_io.discard_temporary, root, handle, temp))

    async def _put_sidecar(self, key: str, payload: bytes) -> None:
        await self._io("write the sidecar of", key, _fs_io.write_sidecar, key, payload)

    async def _get_object_and_sidecar(self, key: str) -> tuple[bytes | None, bytes | None]:
        return await self._io("read", key, _fs_io.read_pair, key)

    async def _get_sidecar(self, key: str) -> bytes | None:
        return await self._io("read the sidecar of", key, _fs_io.read_sidecar, key)

    async def _open_object(
        self, key: str, chunk_size: int
    ) -> tuple[int, AsyncIterator[bytes]] | None:
        opened = await self._io("read", key, _fs_io.open_for_reading, key)
        if opened is None:
            return None
        size, handle = opened
        return size, self._chunks(key, handle, chunk_size)

    async def _chunks(self, key: str, handle: BinaryIO, chunk_size: int) -> AsyncIterator[bytes]:
        try:
            while True:
                chunk = await self._step("read", key, _fs_io.read_chunk, handle, chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            handle.close()

    async def _exists(self, key: str) -> tuple[bool, bool]:
        return await self._io("check", key, _fs_io.pair_exists, key)

    async def _iter_keys(self, prefix: str) -> AsyncIterator[str]:
        # One folder's names in memory at a time; deeper folders are read when reached.
        entries = await self._io("list", prefix, _fs_io.scan_directory, prefix)
        for name, is_folder in entries:
            key = f"{prefix}/{name}" if prefix else name
            if is_folder:
                async for nested in self._iter_keys(key):
                    yield nested
            else:
                yield key

    async def _delete(self, key: str) -> bool:
        return await self._io("delete", key, _fs_io.delete_pair, key)

    async def _delete_prefix(self, prefix: str) -> int:
        return await self._io("delete", prefix, _fs_io.delete_tree, prefix)

    async def _close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            # Waiting would block the loop; queued steps finish on their own threads.
            executor.shutdown(wait=False)

    def object_path(self, key: str) -> str:
        """Where ``key``'s object file lives (for tests and operators; not validated I/O)."""
        return os.path.join(self._root, *key.split("/"))
