"""The sidecar: ``StorageMetadata``, its JSON form, and the small object-metadata index.

Every object has a JSON sidecar (``<key>.meta.json``) holding its provenance, the hashes
that tie it to the code and configuration that produced it, and the sha256 and size of
its bytes. The library computes ``sha256`` and ``size`` itself and checks them on every
read. Fields this version does not know are kept (``extra="allow"``), so a sidecar
written by a newer version survives a read-modify-write by an older one.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from durableflow.errors import StorageError, StorageIntegrityError

SIDECAR_SCHEMA_VERSION = 1
"""Version of the sidecar format this library writes."""

USER_METADATA_LIMIT_BYTES = 2048
"""S3's limit on user-defined object metadata (keys plus values, UTF-8)."""

INDEX_SCHEMA = "durableflow-schema"
INDEX_SHA256 = "durableflow-sha256"
INDEX_EXECUTION = "durableflow-execution"

_SHA256_HEX = r"^[0-9a-f]{64}$"


class ObjectMetadataTooLarge(StorageError):
    """The object-metadata index would exceed S3's 2 KB user-metadata limit.

    Raised before anything is written. S3 refuses such objects, but test servers (moto,
    some MinIO builds) accept them, so the library checks for itself. The usual cause is
    an over-long execution id; shorten it (the full provenance lives in the sidecar).
    """

    def __init__(self, key: str, size: int) -> None:
        super().__init__(
            f"object metadata for {key!r} would be {size} bytes; S3 allows "
            f"{USER_METADATA_LIMIT_BYTES} bytes of user metadata. Shorten the execution id; "
            "provenance belongs in the sidecar, not in object metadata"
        )
        self.key = key
        self.size = size


class StorageMetadata(BaseModel):
    """The sidecar of one stored object.

    Callers fill in provenance; the library sets ``sha256``, ``size``, ``schema_version``
    and (when left empty) ``written_at``, ``worker``, ``content_type`` and the execution
    fields of keys that follow the ``executions/...`` convention. Unknown fields are kept.

    Example::

        metadata = StorageMetadata(step_name="fetch", config_hash="c0ffee",
                                   custom={"rows": 120})
        stored = await storage.write(key, data, metadata)
        stored.metadata.sha256   # computed from data
    """

    model_config = ConfigDict(extra="allow")

    schema_version: int = Field(default=SIDECAR_SCHEMA_VERSION, ge=1)
    execution_id: str | None = Field(default=None, description="Run that produced the object.")
    route_id: str | None = Field(default=None, description="Route (branch) within the run.")
    stage: str | None = Field(default=None, description="Stage (step) name in the key.")
    message_id: str | None = Field(default=None, description="Message the object belongs to.")
    step_name: str | None = Field(default=None, description="Adapter or step that wrote it.")
    worker: str | None = Field(default=None, description="Worker (host:pid) that wrote it.")
    written_at: datetime | None = Field(default=None, description="UTC time of the write.")
    config_hash: str | None = None
    code_hash: str | None = None
    lineage_id: str | None = None
    sha256: str | None = Field(default=None, pattern=_SHA256_HEX)
    size: int | None = Field(default=None, ge=0)
    content_type: str | None = None
    custom: dict[str, JsonValue] = Field(default_factory=dict)
    # Provenance of artefacts written by workflow steps (the run is execution_id, the
    # workflow route_id, the step stage; see docs/storage.md).
    workflow_version: int | None = Field(default=None, description="Version of the workflow.")
    step_id: int | None = Field(default=None, description="Step id within the run.")
    attempt: int | None = Field(default=None, description="Attempt of the step that wrote it.")
    finished_at: datetime | None = Field(default=None, description="When the step finished.")
    artefact_name: str | None = Field(
        default=None, description="Name given to ctx.write_artefact (None: the step's output)."
    )
    input_lineage_ids: list[str] = Field(
        default_factory=list, description="Lineage ids of the artefacts it was made from."
    )

    def to_sidecar_bytes(self) -> bytes:
        """The sidecar file's content: JSON, UTF-8, unknown fields included."""
        return self.model_dump_json(indent=2).encode("utf-8")

    @classmethod
    def from_sidecar_bytes(cls, key: str, payload: bytes) -> StorageMetadata:
        """Parse a sidecar; a malformed one is an integrity failure of ``key``."""
        try:
            return cls.model_validate_json(payload)
        except ValidationError as exc:
            raise StorageIntegrityError(
                key, f"its sidecar is not valid metadata ({exc.error_count()} errors: {exc})"
            ) from exc


@dataclass(frozen=True)
class StoredObject:
    """What a write stored: the key, its size and sha256, and the full sidecar."""

    key: str
    size: int
    sha256: str
    metadata: StorageMetadata


def default_worker_name() -> str:
    """``host:pid`` of this process, the default ``worker`` provenance."""
    return f"{socket.gethostname()}:{os.getpid()}"


def prepare_metadata(
    key: str,
    metadata: StorageMetadata | None,
    *,
    sha256: str | None,
    size: int | None,
    execution_parts: dict[str, str] | None,
) -> StorageMetadata:
    """A copy of ``metadata`` completed by the library for a write of ``key``.

    ``execution_parts`` holds the fields read from an ``executions/...`` key; a caller
    value that contradicts the key is refused before anything is written.
    """
    base = metadata if metadata is not None else StorageMetadata()
    if not isinstance(base, StorageMetadata):
        raise StorageError(
            f"metadata for {key!r} must be a StorageMetadata, not {type(base).__name__}"
        )
    update: dict[str, Any] = {
        "schema_version": SIDECAR_SCHEMA_VERSION,
        "sha256": sha256,
        "size": size,
    }
    for field, value in (execution_parts or {}).items():
        given = getattr(base, field)
        if given is None:
            update[field] = value
        elif given != value:
            raise StorageError(
                f"metadata.{field} is {given!r} but the key {key!r} says {value!r}; "
                "leave it empty to take it from the key"
            )
    if base.written_at is None:
        update["written_at"] = datetime.now(UTC)
    if base.worker is None:
        update["worker"] = default_worker_name()
    if base.content_type is None:
        guessed, _ = mimetypes.guess_type(key, strict=False)
        update["content_type"] = guessed or "application/octet-stream"
    # model_copy keeps extra fields; validate the result so a bad caller value fails here.
    return StorageMetadata.model_validate({**base.model_dump(), **update})


def verify_bytes(key: str, metadata: StorageMetadata, data: bytes) -> None:
    """Raise ``StorageIntegrityError`` unless ``data`` matches the sidecar's size and sha256."""
    verify_digest(key, metadata, size=len(data), sha256=hashlib.sha256(data).hexdigest())


def verify_digest(key: str, metadata: StorageMetadata, *, size: int, sha256: str) -> None:
    """Compare a computed size and sha256 with the sidecar's."""
    if metadata.sha256 is None or metadata.size is None:
        raise StorageIntegrityError(key, "its sidecar records no sha256/size")
    if size != metadata.size:
        raise StorageIntegrityError(
            key, f"the object has {size} bytes but its sidecar records {metadata.size}"
        )
    if sha256 != metadata.sha256:
        raise StorageIntegrityError(
            key, f"the object's sha256 is {sha256} but its sidecar records {metadata.sha256}"
        )


def build_object_index(key: str, metadata: StorageMetadata) -> dict[str, str]:
    """The small ASCII index stored as S3 object metadata, checked against the 2 KB limit.

    It lets ``aws s3api head-object`` show what an object is without fetching the
    sidecar: the sidecar schema version, the sha256 (absent for streamed writes, whose
    hash is only known at the end) and the execution id (percent-encoded to stay ASCII).
    """
    index = {INDEX_SCHEMA: str(metadata.schema_version)}
    if metadata.sha256 is not None:
        index[INDEX_SHA256] = metadata.sha256
    if metadata.execution_id is not None:
        index[INDEX_EXECUTION] = quote(metadata.execution_id, safe="")
    size = user_metadata_size(index)
    if size > USER_METADATA_LIMIT_BYTES:
        raise ObjectMetadataTooLarge(key, size)
    return index


def user_metadata_size(index: dict[str, str]) -> int:
    """Size of user metadata as S3 counts it: UTF-8 bytes of every key and value."""
    return sum(
        len(name.encode("utf-8")) + len(value.encode("utf-8")) for name, value in index.items()
    )
