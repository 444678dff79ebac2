"""``create_storage_provider``: pick and configure a provider from a URL or settings."""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from pydantic import ValidationError

from durableflow.errors import StorageError
from durableflow.storage.base import BaseStorageProvider
from durableflow.storage.events import StorageEventPublisher, create_event_channel
from durableflow.storage.filesystem import FilesystemStorageProvider
from durableflow.storage.keys import validate_prefix
from durableflow.storage.memory import MemoryStorageProvider
from durableflow.storage.settings import StorageSettings

SUPPORTED_SCHEMES = ("file", "memory", "minio", "s3")
_S3_QUERY_OPTIONS = {"endpoint", "region"}


def _settings_from(url_or_settings: str | StorageSettings | None) -> StorageSettings:
    if isinstance(url_or_settings, StorageSettings):
        return url_or_settings
    try:
        if url_or_settings is None:
            return StorageSettings()
        if not isinstance(url_or_settings, str):
            raise StorageError(
                "create_storage_provider() takes a storage URL or StorageSettings, not "
                f"{type(url_or_settings).__name__}"
            )
        return StorageSettings(url=url_or_settings)
    except ValidationError as exc:
        first = exc.errors()[0]
        setting = ".".join(str(part) for part in first["loc"])
        raise StorageError(
            f"invalid storage setting {setting}: {first['msg']} (environment variable "
            f"DURABLEFLOW_STORAGE_{setting.upper()})"
        ) from exc


def create_storage_provider(
    url_or_settings: str | StorageSettings | None = None,
    *,
    events: StorageEventPublisher | None = None,
) -> BaseStorageProvider:
    """The provider a storage URL names, configured from settings and the environment.

    - ``file:///abs/path`` (or ``file://relative/path``): ``FilesystemStorageProvider``
    - ``s3://bucket[/prefix]``: ``S3StorageProvider`` (needs ``durableflow[s3]``)
    - ``minio://bucket[/prefix]``: the same against an S3-compatible endpoint, taken from
      ``?endpoint=``, ``DURABLEFLOW_STORAGE_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL(_S3)``
    - ``memory://``: a fresh ``MemoryStorageProvider``

    ``None`` reads ``DURABLEFLOW_STORAGE_URL``. Events go to ``events`` if given, else
    to ``DURABLEFLOW_STORAGE_EVENTS_URL`` when set (the provider then owns and closes
    that channel). Nothing connects until first use.

    Example::

        storage = create_storage_provider("s3://artefacts/prod")
        async with storage:
            await storage.write("executions/r1/main/fetch/m1.json", b"{}")
    """
    settings = _settings_from(url_or_settings)
    url = settings.url
    if not url:
        raise StorageError(
            "no storage is configured: set DURABLEFLOW_STORAGE_URL (or pass a URL) to "
            "file:///path, s3://bucket, minio://bucket or memory://"
        )
    scheme, separator, rest = url.partition("://")
    scheme = scheme.lower()
    if not separator or scheme not in SUPPORTED_SCHEMES:
        raise StorageError(
            f"unknown storage URL {url!r}: the scheme must be one of "
            + ", ".join(f"{name}://" for name in SUPPORTED_SCHEMES)
        )
    owns_events = False
    if events is None and settings.events_url:
        events = create_event_channel(settings.events_url, channel=settings.events_channel)
        owns_events = True
    timeout = settings.event_publish_timeout
    if scheme == "memory":
        return MemoryStorageProvider(
            events=events, event_publish_timeout=timeout, owns_events=owns_events
        )
    if scheme == "file":
        if not rest:
            raise StorageError(
                f"the storage URL {url!r} names no folder: use file:///absolute/path"
            )
        return FilesystemStorageProvider(
            rest,
            io_threads=settings.filesystem_io_threads,
            events=events,
            event_publish_timeout=timeout,
            owns_events=owns_events,
        )
    return _create_s3(url, scheme, settings, events, owns_events)


def _create_s3(
    url: str,
    scheme: str,
    settings: StorageSettings,
    events: StorageEventPublisher | None,
    owns_events: bool,
) -> BaseStorageProvider:
    # Imported here so file:// and memory:// work without the s3 extra installed.
    from durableflow.storage.s3 import S3StorageProvider, import_obstore, validate_bucket

    import_obstore()
    parts = urlsplit(url)
    bucket = validate_bucket(parts.netloc or None, url)
    prefix = validate_prefix(parts.path.lstrip("/"))
    query = parse_qs(parts.query)
    unknown = set(query) - _S3_QUERY_OPTIONS
    if unknown:
        raise StorageError(
            f"unknown option(s) {', '.join(sorted(unknown))} in the storage URL; only "
            "endpoint and region may be given there (credentials belong in the environment)"
        )
    endpoint = (
        query.get("endpoint", [None])[0]
        or settings.s3_endpoint
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    region = query.get("region", [None])[0] or settings.s3_region
    if scheme == "minio":
        if not endpoint:
            raise StorageError(
                f"{url!r} needs the S3-compatible server's address: set "
                "DURABLEFLOW_STORAGE_S3_ENDPOINT (or AWS_ENDPOINT_URL), or add "
                "?endpoint=http://host:9000 to the URL"
            )
        region = region or "us-east-1"  # MinIO ignores it; signing needs one
    secret = settings.s3_secret_access_key
    return S3StorageProvider(
        bucket,
        prefix=prefix or None,
        endpoint=endpoint,
        region=region,
        access_key_id=settings.s3_access_key_id,
        secret_access_key=secret.get_secret_value() if secret is not None else None,
        allow_http=settings.s3_allow_http,
        events=events,
        event_publish_timeout=settings.event_publish_timeout,
        owns_events=owns_events,
    )
