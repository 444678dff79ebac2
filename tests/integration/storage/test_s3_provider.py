"""S3 provider behaviour beyond the conformance suite, against moto's HTTP server.

What is stored is checked through a separate obstore handle (``raw_s3_store``) that
does not go through durableflow.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import obstore
import pytest

from durableflow.cli.storage_cmd import register
from durableflow.errors import StorageError
from durableflow.storage import (
    USER_METADATA_LIMIT_BYTES,
    ObjectMetadataTooLarge,
    S3StorageProvider,
    StorageMetadata,
    StorageSettings,
    create_storage_provider,
)

BUCKET = "durableflow-tests"  # created by the moto_endpoint fixture


async def raw_names(store: Any, prefix: str) -> list[str]:
    return [entry["path"] async for page in obstore.list(store, prefix) for entry in page]


async def test_sidecar_is_a_separate_object_and_metadata_a_small_index(
    s3_storage: S3StorageProvider, raw_s3_store: Any, unique_prefix: str
) -> None:
    key = f"{unique_prefix}/executions/run-1/main/fetch/m1.json"
    data = b'{"rows": 3}'
    await s3_storage.write(
        key, data, StorageMetadata(custom={"notes": "n" * 5000}, config_hash="cfg")
    )

    assert await raw_names(raw_s3_store, unique_prefix) == [key, key + ".meta.json"]
    stored = await obstore.get_async(raw_s3_store, key)
    assert bytes(await stored.bytes_async()) == data
    user_metadata = {
        name: value for name, value in stored.attributes.items() if name != "Content-Type"
    }
    assert user_metadata == {
        "durableflow-schema": "1",
        "durableflow-sha256": hashlib.sha256(data).hexdigest(),
    }
    assert stored.attributes["Content-Type"] == "application/json"

    sidecar = await obstore.get_async(raw_s3_store, key + ".meta.json")
    document = json.loads(bytes(await sidecar.bytes_async()))
    assert document["custom"]["notes"] == "n" * 5000
    assert document["config_hash"] == "cfg"
    assert document["sha256"] == hashlib.sha256(data).hexdigest()


async def test_execution_keys_carry_the_execution_id_in_the_index(
    s3_storage: S3StorageProvider, raw_s3_store: Any
) -> None:
    key = "executions/run-ü/main/fetch/m1"
    await s3_storage.write(key, b"x")
    head = await obstore.get_async(raw_s3_store, key)
    assert head.attributes["durableflow-execution"] == "run-%C3%BC"
    await s3_storage.delete_prefix("executions/run-ü")


async def test_2kb_user_metadata_limit_is_enforced_before_anything_is_written(
    s3_storage: S3StorageProvider, raw_s3_store: Any, unique_prefix: str
) -> None:
    """moto accepts oversized metadata; the library refuses it itself, writing nothing."""
    key = f"{unique_prefix}/too-much"
    oversized = StorageMetadata(execution_id="e" * USER_METADATA_LIMIT_BYTES)
    with pytest.raises(ObjectMetadataTooLarge, match="S3 allows 2048 bytes"):
        await s3_storage.write(key, b"data", oversized)

    async def chunks() -> AsyncIterator[bytes]:
        yield b"data"

    with pytest.raises(ObjectMetadataTooLarge):
        await s3_storage.write_stream(key, chunks(), oversized)
    assert await raw_names(raw_s3_store, unique_prefix) == []
    assert not await s3_storage.exists(key)


async def test_streamed_write_uses_multipart_and_records_the_hash_in_the_sidecar(
    s3_provider_factory: Any, raw_s3_store: Any, unique_prefix: str
) -> None:
    part = 5 * 1024 * 1024
    async with s3_provider_factory(stream_part_bytes=part) as storage:
        pieces = [bytes([index]) * (1024 * 1024) for index in range(12)]

        async def chunks() -> AsyncIterator[bytes]:
            for piece in pieces:
                yield piece

        key = f"{unique_prefix}/multipart.bin"
        stored = await storage.write_stream(key, chunks())
        whole = b"".join(pieces)
        assert stored.sha256 == hashlib.sha256(whole).hexdigest()
        head = await obstore.head_async(raw_s3_store, key)
        # A multipart ETag ends in -<parts>: 12 MiB in 5 MiB parts is 3 parts.
        assert str(head["e_tag"]).strip('"').endswith("-3")
        assert hashlib.sha256(await storage.read(key)).hexdigest() == stored.sha256


@pytest.mark.parametrize("operation", ["write", "read", "exists", "list"])
async def test_missing_bucket_is_a_clear_error(s3_provider_factory: Any, operation: str) -> None:
    async with s3_provider_factory(bucket="no-such-bucket") as storage:
        with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
            if operation == "write":
                await storage.write("k", b"x")
            elif operation == "read":
                await storage.read("k")
            elif operation == "exists":
                await storage.exists("k")
            else:
                [key async for key in storage.list()]


@pytest.mark.usefixtures("s3_credentials")
async def test_minio_alias_reaches_any_s3_compatible_endpoint(
    moto_endpoint: str, unique_prefix: str
) -> None:
    storage = create_storage_provider(f"minio://{BUCKET}/{unique_prefix}?endpoint={moto_endpoint}")
    async with storage:
        await storage.write("a/b", b"via minio alias")
    settings = StorageSettings(
        url=f"s3://{BUCKET}", s3_endpoint=moto_endpoint, s3_region="us-east-1"
    )
    async with create_storage_provider(settings) as plain:
        assert await plain.read(f"{unique_prefix}/a/b") == b"via minio alias"
        assert [key async for key in plain.list(unique_prefix)] == [f"{unique_prefix}/a/b"]


@pytest.mark.usefixtures("s3_credentials")
async def test_cli_reads_s3_through_the_storage_option(
    moto_endpoint: str, unique_prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"minio://{BUCKET}?endpoint={moto_endpoint}"
    async with create_storage_provider(url) as storage:
        await storage.write(f"{unique_prefix}/m.json", b"{}", StorageMetadata(step_name="cli"))
    parser = argparse.ArgumentParser(prog="durableflow")
    register(parser.add_subparsers(dest="command", required=True))

    args = parser.parse_args(["storage", "ls", unique_prefix, "--storage", url])
    assert await args.func(args) == 0
    assert capsys.readouterr().out.splitlines() == [f"{unique_prefix}/m.json"]
    args = parser.parse_args(["storage", "metadata", f"{unique_prefix}/m.json", "--storage", url])
    assert await args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["step_name"] == "cli"


async def test_s3_lists_10000_keys_page_by_page(
    s3_storage: S3StorageProvider, moto_s3_backend: Any, unique_prefix: str
) -> None:
    """10,000 keys come in pages of 1,000; a key added after the first page still shows.

    The keys are seeded straight into moto's backend (10,000 HTTP PUTs would take minutes
    on this machine); the listing under test goes through HTTP like any other call.
    """
    keys = [
        f"{unique_prefix}/stage-{index // 100:03d}/msg-{index % 100:03d}" for index in range(10_000)
    ]
    for key in keys:
        moto_s3_backend.put_object(BUCKET, key, b"x")
    late_key = f"{unique_prefix}/zz-late"

    try:
        listing = s3_storage.list(unique_prefix)
        first = await anext(listing)
        await s3_storage.write(late_key, b"late")
        rest = [key async for key in listing]
        assert [first, *rest] == [*keys, late_key]
    finally:
        # Cleanup through the backend too: 10,000 deletes over HTTP take ~12 s in moto.
        for key in keys:
            moto_s3_backend.delete_object(BUCKET, key)
        await s3_storage.delete(late_key)
