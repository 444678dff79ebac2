"""A writer process killed with SIGKILL mid-write never leaves a valid-looking artefact.

A child process writes through the real provider and SIGKILLs itself at a chosen point
(after the object is in place but before its sidecar, or before the object's rename);
the parent then inspects storage with a fresh provider.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from durableflow.errors import ArtefactNotFound, StorageIntegrityError
from durableflow.storage import create_storage_provider

BUCKET = "durableflow-tests"

CHILD = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    from durableflow.storage import _fs_io, create_storage_provider

    url, key, data, crash_point = sys.argv[1:5]

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    async def die_async(*args, **kwargs):
        die()

    async def chunks():
        yield data.encode()

    async def main():
        storage = create_storage_provider(url)
        if crash_point == "before-sidecar":
            # The object is complete and renamed into place; the sidecar never comes.
            type(storage)._put_sidecar = die_async
            await storage.write(key, data.encode())
        elif crash_point == "before-object-rename":
            # The temporary file is written and fsynced, but never renamed.
            _fs_io.commit_temporary = die
            await storage.write_stream(key, chunks())
        print("the crash point was not reached", file=sys.stderr)
        sys.exit(3)

    asyncio.run(main())
    """
)


async def run_crashing_writer(url: str, key: str, data: str, crash_point: str) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        url,
        key,
        data,
        crash_point,
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == -signal.SIGKILL, stderr.decode()


@pytest.fixture(params=["filesystem", "s3"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "filesystem":
        return f"file://{tmp_path / 'root'}"
    endpoint: str = request.getfixturevalue("moto_endpoint")
    request.getfixturevalue("s3_credentials")  # the child inherits the AWS variables
    return f"minio://{BUCKET}/crash-{uuid.uuid4().hex}?endpoint={endpoint}"


async def test_crash_between_object_and_sidecar_leaves_an_incomplete_object(
    storage_url: str,
) -> None:
    key = "executions/run-1/main/fetch/msg-1.json"
    await run_crashing_writer(
        storage_url, key, '{"written": "by the dead process"}', "before-sidecar"
    )

    async with create_storage_provider(storage_url) as storage:
        assert not await storage.exists(key)
        with pytest.raises(StorageIntegrityError, match="no sidecar"):
            await storage.read(key)
        with pytest.raises(StorageIntegrityError, match="no sidecar"):
            await storage.read_metadata(key)
        with pytest.raises(StorageIntegrityError):
            [chunk async for chunk in storage.read_stream(key)]
        # The retried write (same key) succeeds and is then valid.
        await storage.write(key, b'{"written": "by the retry"}')
        assert await storage.read(key) == b'{"written": "by the retry"}'
        assert (await storage.read_metadata(key)).execution_id == "run-1"


async def test_crash_while_rewriting_never_returns_old_or_new_bytes_as_valid(
    storage_url: str,
) -> None:
    key = "executions/run-1/main/fetch/msg-2.json"
    async with create_storage_provider(storage_url) as storage:
        await storage.write(key, b"the first, complete version")

    await run_crashing_writer(storage_url, key, "a second version", "before-sidecar")

    async with create_storage_provider(storage_url) as storage:
        # New bytes, old sidecar: the sha256/size check refuses them.
        with pytest.raises(StorageIntegrityError):
            await storage.read(key)
        with pytest.raises(StorageIntegrityError):
            [chunk async for chunk in storage.read_stream(key)]
        await storage.write(key, b"repaired")
        assert await storage.read(key) == b"repaired"


async def test_crash_before_the_object_rename_leaves_nothing_visible(tmp_path: Path) -> None:
    root = tmp_path / "root"
    url = f"file://{root}"
    key = "executions/run-1/main/fetch/msg-3.bin"
    await run_crashing_writer(url, key, "streamed bytes", "before-object-rename")

    leftovers = list((root / "executions" / "run-1" / "main" / "fetch").iterdir())
    assert [path.name.startswith(".durableflow-") for path in leftovers] == [True]
    async with create_storage_provider(url) as storage:
        assert not await storage.exists(key)
        with pytest.raises(ArtefactNotFound):
            await storage.read(key)
        assert [name async for name in storage.list()] == []
        await storage.write(key, b"retried")
        assert [name async for name in storage.list()] == [key]
