"""Fixtures for the storage unit tests: memory and filesystem providers, no servers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from durableflow.storage import FilesystemStorageProvider, MemoryStorageProvider
from durableflow.testing import StorageHarness


def write_file_directly(provider: FilesystemStorageProvider, key: str, data: bytes) -> None:
    """Put bytes at a key's object path with plain file I/O, bypassing the provider."""
    path = provider.object_path(key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


@pytest.fixture
async def memory_storage() -> AsyncIterator[MemoryStorageProvider]:
    async with MemoryStorageProvider() as provider:
        yield provider


@pytest.fixture
async def fs_storage(tmp_path: Path) -> AsyncIterator[FilesystemStorageProvider]:
    async with FilesystemStorageProvider(tmp_path / "root") as provider:
        yield provider


@pytest.fixture
def memory_harness(memory_storage: MemoryStorageProvider) -> StorageHarness:
    async def put_raw_object(key: str, data: bytes) -> None:
        memory_storage.put_raw_object(key, data)

    return StorageHarness(memory_storage, put_raw_object=put_raw_object)


@pytest.fixture
def fs_harness(fs_storage: FilesystemStorageProvider) -> StorageHarness:
    async def put_raw_object(key: str, data: bytes) -> None:
        write_file_directly(fs_storage, key, data)

    return StorageHarness(fs_storage, put_raw_object=put_raw_object)
