"""``StorageSettings``: where artefacts go, from ``DURABLEFLOW_STORAGE_*`` variables."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from durableflow.storage.events import DEFAULT_EVENT_CHANNEL


class StorageSettings(BaseSettings):
    """Storage configuration; each field is ``DURABLEFLOW_STORAGE_<NAME>``.

    Example::

        settings = StorageSettings(url="minio://artefacts",
                                   s3_endpoint="http://127.0.0.1:9000")
        storage = create_storage_provider(settings)
    """

    model_config = SettingsConfigDict(env_prefix="DURABLEFLOW_STORAGE_", extra="forbid")

    url: str | None = Field(
        default=None,
        description="file:///path, s3://bucket[/prefix], minio://bucket[/prefix] or memory://",
    )
    s3_endpoint: str | None = Field(
        default=None, description="S3-compatible endpoint URL (required for minio://)."
    )
    s3_region: str | None = Field(default=None, description="Region; else AWS_REGION.")
    s3_access_key_id: str | None = Field(default=None, description="Else AWS_ACCESS_KEY_ID.")
    s3_secret_access_key: SecretStr | None = Field(
        default=None, description="Else AWS_SECRET_ACCESS_KEY."
    )
    s3_allow_http: bool | None = Field(
        default=None, description="Allow http:// endpoints (default: when the endpoint is http)."
    )
    filesystem_io_threads: int = Field(
        default=8, ge=1, le=256, description="Threads for blocking file calls."
    )
    events_url: str | None = Field(
        default=None,
        description="postgresql://... (NOTIFY) or redis://... (pub/sub) for storage events.",
    )
    events_channel: str = Field(default=DEFAULT_EVENT_CHANNEL, description="Event channel name.")
    event_publish_timeout: float = Field(
        default=2.0, gt=0, description="Seconds a write waits for its event to be published."
    )
