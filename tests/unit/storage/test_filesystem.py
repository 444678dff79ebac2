"""Filesystem provider behaviour beyond the conformance suite: layout, root, symlinks."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from durableflow.errors import StorageError, StorageKeyError
from durableflow.storage import FilesystemStorageProvider, create_storage_provider


def scratch_files(root: Path) -> list[str]:
    return [
        os.path.join(folder, name)
        for folder, _, names in os.walk(root)
        for name in names
        if name.startswith(".durableflow-")
    ]


async def test_object_and_sidecar_are_files_side_by_side(tmp_path: Path) -> None:
    async with FilesystemStorageProvider(tmp_path) as storage:
        await storage.write("executions/r1/main/fetch/m1.json", b'{"n": 1}')
    folder = tmp_path / "executions" / "r1" / "main" / "fetch"
    assert sorted(os.listdir(folder)) == ["m1.json", "m1.json.meta.json"]
    assert (folder / "m1.json").read_bytes() == b'{"n": 1}'
    sidecar = json.loads((folder / "m1.json.meta.json").read_text())
    assert sidecar["sha256"] == hashlib.sha256(b'{"n": 1}').hexdigest()
    assert sidecar["size"] == 8
    assert sidecar["execution_id"] == "r1"
    assert scratch_files(tmp_path) == []


async def test_leftover_temporary_files_are_invisible(tmp_path: Path) -> None:
    """A temp file left by a crash mid-write is never listed nor readable as a key."""
    async with FilesystemStorageProvider(tmp_path) as storage:
        await storage.write("stage/kept", b"x")
        (tmp_path / "stage" / ".durableflow-0123abcd.tmp").write_bytes(b"half a wri")
        assert [key async for key in storage.list("stage")] == ["stage/kept"]
        with pytest.raises(StorageKeyError):
            await storage.read("stage/.durableflow-0123abcd.tmp")
        assert await storage.delete_prefix("stage") == 1
    assert not (tmp_path / "stage").exists()


async def test_root_is_created_on_first_use(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet" / "there"
    storage = create_storage_provider(f"file://{root}")
    assert isinstance(storage, FilesystemStorageProvider)
    assert not root.exists()
    async with storage:
        await storage.write("k", b"v")
    assert (root / "k").read_bytes() == b"v"


async def test_unusable_root_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    async with FilesystemStorageProvider(blocker / "root") as storage:
        with pytest.raises(StorageError, match=r"cannot use .* as the storage root"):
            await storage.write("k", b"v")


async def test_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "escape").symlink_to(outside, target_is_directory=True)
    async with FilesystemStorageProvider(root) as storage:
        with pytest.raises(StorageKeyError, match="outside the storage root"):
            await storage.write("escape/stolen.txt", b"secret")
        with pytest.raises(StorageKeyError, match="outside the storage root"):
            await storage.read("escape/stolen.txt")
        with pytest.raises(StorageKeyError, match="outside the storage root"):
            await storage.delete_prefix("escape")
        # Listing the whole root does not follow the link either.
        assert [key async for key in storage.list()] == []
    assert os.listdir(outside) == []


async def test_symlink_inside_the_root_is_allowed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "alias").symlink_to(root / "real", target_is_directory=True)
    async with FilesystemStorageProvider(root) as storage:
        await storage.write("alias/k", b"v")
        assert await storage.read("real/k") == b"v"


async def test_a_key_cannot_be_both_object_and_folder(tmp_path: Path) -> None:
    async with FilesystemStorageProvider(tmp_path) as storage:
        await storage.write("a/b", b"object")
        with pytest.raises(StorageError, match="already an object"):
            await storage.write("a/b/c", b"nested")
        await storage.write("x/y/z", b"nested")
        with pytest.raises(StorageError, match="folder holding other keys"):
            await storage.write("x/y", b"object")
        assert await storage.read("a/b") == b"object"


async def test_listing_is_in_byte_order_of_keys(tmp_path: Path) -> None:
    keys = ["a/b0", "a/b/1", "a/b.txt", "a/b-x/1", "a/B", "a/é", "a/b/0/deep"]
    async with FilesystemStorageProvider(tmp_path) as storage:
        for key in keys:
            await storage.write(key, b"x")
        listed = [key async for key in storage.list("a")]
    assert listed == sorted(keys, key=lambda key: key.encode())


async def test_delete_prunes_empty_folders_but_not_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with FilesystemStorageProvider(root) as storage:
        await storage.write("executions/r1/main/fetch/m1", b"x")
        await storage.write("executions/r2/main/fetch/m1", b"x")
        assert await storage.delete("executions/r1/main/fetch/m1")
        assert not (root / "executions" / "r1").exists()
        assert (root / "executions" / "r2").exists()
        assert await storage.delete_prefix("executions") == 1
    assert os.listdir(root) == []


async def test_failed_stream_leaves_no_temporary_file(tmp_path: Path) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"a" * 1000
        raise ValueError("producer broke")

    async with FilesystemStorageProvider(tmp_path) as storage:
        with pytest.raises(ValueError, match="producer broke"):
            await storage.write_stream("s/big.bin", failing())
    assert scratch_files(tmp_path) == []
    assert not (tmp_path / "s").exists()  # nor the folder made for it


async def test_cancelled_stream_leaves_no_temporary_file(tmp_path: Path) -> None:
    started = asyncio.Event()

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield b"z" * 4096
            started.set()
            await asyncio.sleep(0.01)

    async with FilesystemStorageProvider(tmp_path) as storage:
        task = asyncio.create_task(storage.write_stream("s/endless.bin", endless()))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert scratch_files(tmp_path) == []
    assert not (tmp_path / "s" / "endless.bin").exists()


async def test_many_concurrent_writers(tmp_path: Path) -> None:
    async with FilesystemStorageProvider(tmp_path, io_threads=4) as storage:
        keys = [f"c/{index:03d}" for index in range(64)]
        await asyncio.gather(*(storage.write(key, key.encode()) for key in keys))
        contents = await asyncio.gather(*(storage.read(key) for key in keys))
    assert contents == [key.encode() for key in keys]
