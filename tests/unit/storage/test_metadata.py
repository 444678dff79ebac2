"""The sidecar model, its completion by the library, and the S3 object-metadata index."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from durableflow.errors import StorageError, StorageIntegrityError
from durableflow.storage import (
    SIDECAR_SCHEMA_VERSION,
    USER_METADATA_LIMIT_BYTES,
    FilesystemStorageProvider,
    MemoryStorageProvider,
    ObjectMetadataTooLarge,
    StorageMetadata,
)
from durableflow.storage.metadata import (
    INDEX_EXECUTION,
    INDEX_SCHEMA,
    INDEX_SHA256,
    build_object_index,
    user_metadata_size,
)


def read_json(path: Path) -> Any:
    """Read a sidecar file behind the provider's back (plain blocking I/O in a test)."""
    return json.loads(path.read_text())


def write_bytes(path: Path, data: bytes) -> None:
    """Overwrite a file behind the provider's back."""
    path.write_bytes(data)


async def test_library_computes_sha256_and_size_over_caller_values() -> None:
    storage = MemoryStorageProvider()
    lying = StorageMetadata(sha256="0" * 64, size=1)
    stored = await storage.write("k", b"real bytes", lying)
    assert stored.metadata.sha256 == hashlib.sha256(b"real bytes").hexdigest()
    assert stored.metadata.size == len(b"real bytes")
    assert stored.metadata.schema_version == SIDECAR_SCHEMA_VERSION


async def test_caller_values_for_time_worker_and_type_are_kept() -> None:
    storage = MemoryStorageProvider()
    given = StorageMetadata(worker="w-1", content_type="text/csv")
    stored = await storage.write("report.bin", b"a,b", given)
    assert (stored.metadata.worker, stored.metadata.content_type) == ("w-1", "text/csv")
    guessed = await storage.write("report.csv", b"a,b")
    assert guessed.metadata.content_type == "text/csv"
    unknown = await storage.write("report.unknownext", b"a,b")
    assert unknown.metadata.content_type == "application/octet-stream"


async def test_write_does_not_mutate_the_callers_metadata() -> None:
    given = StorageMetadata(step_name="s")
    await MemoryStorageProvider().write("k", b"x", given)
    assert given.sha256 is None
    assert given.written_at is None


async def test_metadata_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(StorageError, match="must be a StorageMetadata"):
        await MemoryStorageProvider().write("k", b"x", {"step_name": "s"})  # type: ignore[arg-type]


def test_sidecar_json_keeps_unknown_fields() -> None:
    written_by_a_newer_version = json.dumps(
        {
            "schema_version": 3,
            "sha256": "a" * 64,
            "size": 1,
            "retention_class": "gold",
            "signatures": [{"by": "ci", "sig": "abc"}],
        }
    ).encode()
    metadata = StorageMetadata.from_sidecar_bytes("k", written_by_a_newer_version)
    assert metadata.schema_version == 3
    assert metadata.model_extra == {
        "retention_class": "gold",
        "signatures": [{"by": "ci", "sig": "abc"}],
    }
    again = json.loads(metadata.to_sidecar_bytes())
    assert again["retention_class"] == "gold"
    assert again["signatures"] == [{"by": "ci", "sig": "abc"}]


async def test_hand_written_sidecar_fields_survive_a_rewrite(
    fs_storage: FilesystemStorageProvider,
) -> None:
    """A sidecar file edited by another tool keeps its extra fields through the library."""
    await fs_storage.write("a/b.txt", b"hello")
    sidecar_path = Path(fs_storage.object_path("a/b.txt") + ".meta.json")
    document = read_json(sidecar_path)
    document["reviewed_by"] = {"name": "ops", "ticket": 42}
    write_bytes(sidecar_path, json.dumps(document).encode())

    metadata = await fs_storage.read_metadata("a/b.txt")
    updated = metadata.model_copy(update={"config_hash": "new-config"})
    await fs_storage.write("a/b.txt", await fs_storage.read("a/b.txt"), updated)

    final = read_json(sidecar_path)
    assert final["reviewed_by"] == {"name": "ops", "ticket": 42}
    assert final["config_hash"] == "new-config"


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[]", b'{"size": -1}', b'{"sha256": "short"}', b'{"schema_version": 0}'],
)
async def test_malformed_sidecar_is_an_integrity_error(
    fs_storage: FilesystemStorageProvider, payload: bytes
) -> None:
    await fs_storage.write("k", b"x")
    write_bytes(Path(fs_storage.object_path("k") + ".meta.json"), payload)
    with pytest.raises(StorageIntegrityError, match="sidecar is not valid metadata"):
        await fs_storage.read("k")
    with pytest.raises(StorageIntegrityError):
        await fs_storage.read_metadata("k")


def test_object_index_is_small_and_ascii() -> None:
    metadata = StorageMetadata(
        sha256="b" * 64, execution_id="exécution/1 ✓", custom={"big": "x" * 10_000}
    )
    index = build_object_index("k", metadata)
    assert index == {
        INDEX_SCHEMA: str(SIDECAR_SCHEMA_VERSION),
        INDEX_SHA256: "b" * 64,
        INDEX_EXECUTION: "ex%C3%A9cution%2F1%20%E2%9C%93",
    }
    assert all(value.isascii() for value in index.values())


def test_object_index_enforces_the_2kb_limit_exactly() -> None:
    fixed = user_metadata_size({INDEX_SCHEMA: "1", INDEX_SHA256: "c" * 64, INDEX_EXECUTION: ""})
    room = USER_METADATA_LIMIT_BYTES - fixed
    at_limit = StorageMetadata(sha256="c" * 64, execution_id="e" * room)
    assert user_metadata_size(build_object_index("k", at_limit)) == USER_METADATA_LIMIT_BYTES
    over = StorageMetadata(sha256="c" * 64, execution_id="e" * (room + 1))
    with pytest.raises(ObjectMetadataTooLarge) as caught:
        build_object_index("k", over)
    assert caught.value.size == USER_METADATA_LIMIT_BYTES + 1
    assert "2048" in str(caught.value)
    assert "Shorten the execution id" in str(caught.value)


def test_percent_encoding_counts_towards_the_limit() -> None:
    # 700 'é' are 1,400 UTF-8 bytes but 4,200 bytes once percent-encoded to stay ASCII.
    with pytest.raises(ObjectMetadataTooLarge):
        build_object_index("k", StorageMetadata(execution_id="é" * 700))
