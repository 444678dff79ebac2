"""Listing 10,000 keys page by page, without reading the whole listing up front.

The proof of laziness is behavioural: once the first key has been yielded, a key added
at the very end of the listing still shows up. A provider that had materialised the
listing before yielding would miss it. (The S3 twin lives in tests/integration/storage.)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from durableflow.storage import FilesystemStorageProvider, MemoryStorageProvider, StorageMetadata

STAGES = 100
MESSAGES = 100
LATE_KEY = f"executions/run/main/stage-{STAGES - 1:03d}/zz-late"


def expected_keys() -> list[str]:
    return [
        f"executions/run/main/stage-{stage:03d}/msg-{message:03d}"
        for stage in range(STAGES)
        for message in range(MESSAGES)
    ]


def seed_files(root: Path) -> None:
    """Create the 10,000 objects with plain file writes: listing is under test, not writing.

    Only the first folder gets sidecars (they must be skipped); 10,000 more files would
    double the seeding time for no extra coverage.
    """
    sidecar = StorageMetadata(sha256="0" * 64, size=1).to_sidecar_bytes()
    for stage in range(STAGES):
        folder = root / "executions" / "run" / "main" / f"stage-{stage:03d}"
        folder.mkdir(parents=True)
        for message in range(MESSAGES):
            (folder / f"msg-{message:03d}").write_bytes(b"x")
            if stage == 0:
                (folder / f"msg-{message:03d}.meta.json").write_bytes(sidecar)


def add_late_key(root: Path) -> None:
    (root / LATE_KEY).write_bytes(b"late")


async def test_memory_lists_10000_keys_lazily() -> None:
    storage = MemoryStorageProvider()
    for key in expected_keys():
        storage.put_raw_object(key, b"x")
        storage.put_raw_object(key + ".meta.json", b"{}")
    listing = storage.list("executions/run")
    first = await anext(listing)
    storage.put_raw_object(LATE_KEY, b"late")
    rest = [key async for key in listing]
    assert [first, *rest] == [*expected_keys(), LATE_KEY]


@pytest.fixture
def listing_root(tmp_path: Path) -> Iterator[Path]:
    """A folder in RAM when /dev/shm exists: 10,000 file creations on a busy disk take
    seconds and say nothing about listing."""
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        root = Path(tempfile.mkdtemp(prefix="durableflow-listing-", dir="/dev/shm"))
        try:
            yield root
        finally:
            shutil.rmtree(root, ignore_errors=True)
    else:
        yield tmp_path


async def test_filesystem_lists_10000_keys_lazily(listing_root: Path) -> None:
    storage = FilesystemStorageProvider(listing_root)
    seed_files(listing_root)
    async with storage:
        listing = storage.list("executions/run")
        first = await anext(listing)
        assert first == expected_keys()[0]
        add_late_key(listing_root)
        rest = [key async for key in listing]
    assert [first, *rest] == [*expected_keys(), LATE_KEY]
