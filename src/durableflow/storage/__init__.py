"""Artefact storage: one protocol, filesystem / S3 / memory providers, JSON sidecars.

Every artefact is an object under a key plus a ``<key>.meta.json`` sidecar holding its
provenance and the sha256 and size checked on every read. Execution artefacts live
under ``executions/<execution-id>/<route-id>/<stage-name>/<message-id>[.ext]``
(``ExecutionPathResolver``), the layout replay relies on. See ``docs/storage.md``.

Example::

    from durableflow.storage import ExecutionPathResolver, StorageMetadata, create_storage_provider

    storage = create_storage_provider("file:///var/lib/app/artefacts")
    key = ExecutionPathResolver().key("run-1", "main", "fetch", "msg-1", extension="json")
    stored = await storage.write(key, b'{"ok": true}', StorageMetadata(step_name="fetch"))
    assert await storage.read(key) == b'{"ok": true}'
"""

from durableflow.storage.base import BaseStorageProvider
from durableflow.storage.events import (
    DEFAULT_EVENT_CHANNEL,
    StorageEvent,
    StorageEventChannel,
    StorageEventPublisher,
    create_event_channel,
)
from durableflow.storage.events_postgres import PostgresStorageEventChannel
from durableflow.storage.events_redis import RedisStorageEventChannel
from durableflow.storage.factory import create_storage_provider
from durableflow.storage.filesystem import FilesystemStorageProvider
from durableflow.storage.keys import (
    MAX_KEY_BYTES,
    SIDECAR_SUFFIX,
    ExecutionPath,
    ExecutionPathResolver,
    validate_key,
    validate_prefix,
)
from durableflow.storage.memory import MemoryStorageProvider
from durableflow.storage.metadata import (
    SIDECAR_SCHEMA_VERSION,
    USER_METADATA_LIMIT_BYTES,
    ObjectMetadataTooLarge,
    StorageMetadata,
    StoredObject,
)
from durableflow.storage.protocol import StorageProtocol

# obstore (the s3 extra) is imported when an S3StorageProvider is built, not here.
from durableflow.storage.s3 import S3StorageProvider
from durableflow.storage.settings import StorageSettings

__all__ = [
    "DEFAULT_EVENT_CHANNEL",
    "MAX_KEY_BYTES",
    "SIDECAR_SCHEMA_VERSION",
    "SIDECAR_SUFFIX",
    "USER_METADATA_LIMIT_BYTES",
    "BaseStorageProvider",
    "ExecutionPath",
    "ExecutionPathResolver",
    "FilesystemStorageProvider",
    "MemoryStorageProvider",
    "ObjectMetadataTooLarge",
    "PostgresStorageEventChannel",
    "RedisStorageEventChannel",
    "S3StorageProvider",
    "StorageEvent",
    "StorageEventChannel",
    "StorageEventPublisher",
    "StorageMetadata",
    "StorageProtocol",
    "StorageSettings",
    "StoredObject",
    "create_event_channel",
    "create_storage_provider",
    "validate_key",
    "validate_prefix",
]
