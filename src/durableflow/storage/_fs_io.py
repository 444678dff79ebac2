"""Blocking filesystem steps of ``FilesystemStorageProvider``, run on its I/O threads.

Operating systems offer no asynchronous file API that Python can await, so the
provider hands each of these short, self-contained steps to a small thread pool of its
own; the event loop never blocks on ``fsync``. Nothing here is public.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import BinaryIO

from durableflow.errors import StorageKeyError
from durableflow.storage.keys import SCRATCH_PREFIX, SIDECAR_SUFFIX

_OPEN_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def prepare_root(root: str) -> str:
    """Create the root folder if needed and return its real (symlink-free) path."""
    os.makedirs(root, exist_ok=True)
    return os.path.realpath(root)


def path_inside(root_real: str, name: str) -> str:
    """The path of ``name`` under the root, refusing one that resolves outside it.

    ``name`` is already a validated key, so only symlinks inside the root can make it
    escape; ``realpath`` follows them.
    """
    path = os.path.join(root_real, *name.split("/"))
    resolved = os.path.realpath(path)
    if resolved != root_real and not resolved.startswith(root_real + os.sep):
        raise StorageKeyError(
            name,
            f"it resolves to {resolved}, outside the storage root {root_real} "
            "(a symlink inside the root points out of it)",
        )
    return path


def fsync_directory(directory: str) -> None:
    """Make renames in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_path(directory: str) -> str:
    return os.path.join(directory, f"{SCRATCH_PREFIX}{uuid.uuid4().hex}.tmp")


def write_atomically(path: str, data: bytes, *, sync_directory: bool) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, rename it over ``path``.

    A reader sees the old file or the new one, never a prefix of the new one.
    """
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temp = _temp_path(directory)
    fd = os.open(temp, _OPEN_NEW, 0o644)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    if sync_directory:
        fsync_directory(directory)


def write_object(root_real: str, key: str, data: bytes) -> None:
    """Atomically replace ``key``'s object file (the sidecar's fsync covers the folder)."""
    path = path_inside(root_real, key)
    path_inside(root_real, key + SIDECAR_SUFFIX)
    write_atomically(path, data, sync_directory=False)


def write_sidecar(root_real: str, key: str, payload: bytes) -> None:
    """Atomically replace ``key``'s sidecar, then fsync the folder for both renames."""
    write_atomically(path_inside(root_real, key + SIDECAR_SUFFIX), payload, sync_directory=True)


def open_temporary(root_real: str, key: str) -> tuple[str, str, BinaryIO]:
    """Open a new temporary file beside ``key``'s object for a streamed write.

    Returns the object's path, the temporary file's path and its handle.
    """
    path = path_inside(root_real, key)
    path_inside(root_real, key + SIDECAR_SUFFIX)
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temp = _temp_path(directory)
    fd = os.open(temp, _OPEN_NEW, 0o644)
    return path, temp, os.fdopen(fd, "wb")


def write_chunk(handle: BinaryIO, chunk: bytes) -> None:
    """Append one chunk of a streamed write."""
    handle.write(chunk)


def commit_temporary(handle: BinaryIO, temp: str, path: str) -> None:
    """fsync and close a streamed write's temporary file, then rename it over ``path``."""
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.replace(temp, path)


def discard_temporary(root_real: str, handle: BinaryIO, temp: str) -> None:
    """Close and remove a streamed write's temporary file after a failure."""
    with contextlib.suppress(OSError):
        handle.close()
    with contextlib.suppress(OSError):
        os.unlink(temp)
    remove_empty_parents(root_real, os.path.dirname(temp))


def read_or_none(path: str) -> bytes | None:
    """The file's bytes, or None if there is no regular file at ``path``."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def read_sidecar(root_real: str, key: str) -> bytes | None:
    """``key``'s sidecar bytes, or None."""
    return read_or_none(path_inside(root_real, key + SIDECAR_SUFFIX))


def read_pair(root_real: str, key: str) -> tuple[bytes | None, bytes | None]:
    """The object's bytes and its sidecar's bytes (sidecar read first)."""
    path = path_inside(root_real, key)
    path_inside(root_real, key + SIDECAR_SUFFIX)
    # Sidecar first: if a rewrite lands between the two reads, the object is newer than
    # the sidecar and the sha256 check reports it instead of passing stale bytes.
    sidecar = read_or_none(path + SIDECAR_SUFFIX)
    return read_or_none(path), sidecar


def open_for_reading(root_real: str, key: str) -> tuple[int, BinaryIO] | None:
    """The object's size and an open handle, or None when it is missing."""
    path = path_inside(root_real, key)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the reading generator
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return os.fstat(handle.fileno()).st_size, handle


def read_chunk(handle: BinaryIO, size: int) -> bytes:
    """The next chunk of at most ``size`` bytes (empty at the end)."""
    return handle.read(size)


def pair_exists(root_real: str, key: str) -> tuple[bool, bool]:
    """Whether the object and its sidecar are regular files."""
    path = path_inside(root_real, key)
    path_inside(root_real, key + SIDECAR_SUFFIX)
    return os.path.isfile(path), os.path.isfile(path + SIDECAR_SUFFIX)


def scan_directory(root_real: str, prefix: str) -> list[tuple[str, bool]]:
    """The folder ``prefix``'s entries as ``(name, is_folder)`` in key order, no symlinks.

    Sorting by ``name + "/"`` for folders gives the byte order of full keys, the order S3
    lists in, so all built-in providers list alike.
    """
    directory = path_inside(root_real, prefix) if prefix else root_real
    entries: list[tuple[str, bool]] = []
    try:
        with os.scandir(directory) as iterator:
            for entry in iterator:
                if entry.is_symlink() or entry.name.startswith(SCRATCH_PREFIX):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    entries.append((entry.name, True))
                elif entry.is_file(follow_symlinks=False):
                    entries.append((entry.name, False))
    except (FileNotFoundError, NotADirectoryError):
        return []
    entries.sort(key=lambda item: (item[0] + "/" if item[1] else item[0]).encode("utf-8"))
    return entries


def remove_empty_parents(root_real: str, directory: str) -> None:
    """Remove now-empty folders from ``directory`` up to (not including) the root."""
    current = directory
    while current != root_real and current.startswith(root_real + os.sep):
        try:
            os.rmdir(current)
        except OSError:
            return  # not empty (or already gone): the parents are not empty either
        current = os.path.dirname(current)


def delete_pair(root_real: str, key: str) -> bool:
    """Unlink the sidecar, then the object; prune empty folders. True if either existed."""
    path = path_inside(root_real, key)
    path_inside(root_real, key + SIDECAR_SUFFIX)
    removed = False
    for target in (path + SIDECAR_SUFFIX, path):
        try:
            os.unlink(target)
            removed = True
        except (FileNotFoundError, NotADirectoryError):
            pass
        except IsADirectoryError:
            pass  # the key names a folder of other keys, not an object
    remove_empty_parents(root_real, os.path.dirname(path))
    return removed


def delete_tree(root_real: str, prefix: str) -> int:
    """Remove the folder ``prefix`` with everything in it; the number of objects removed."""
    directory = path_inside(root_real, prefix)
    if not os.path.isdir(directory) or os.path.islink(directory):
        return 0
    objects = 0
    for current, folders, files in os.walk(directory, topdown=False):
        for name in files:
            full = os.path.join(current, name)
            counts = not (
                os.path.islink(full)
                or name.endswith(SIDECAR_SUFFIX)
                or name.startswith(SCRATCH_PREFIX)
            )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(full)
                objects += counts
        for name in folders:
            full = os.path.join(current, name)
            # os.walk lists symlinks to folders among folders without entering them.
            with contextlib.suppress(OSError):
                if os.path.islink(full):
                    os.unlink(full)
                else:
                    os.rmdir(full)
    with contextlib.suppress(OSError):
        os.rmdir(directory)
    remove_empty_parents(root_real, os.path.dirname(directory))
    return objects
