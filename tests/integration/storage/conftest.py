"""Real servers for the storage integration tests.

- moto's S3 server (``moto_endpoint``, from ``tests/integration/conftest.py``);
- Postgres at ``DURABLEFLOW_TEST_DSN`` (else postgresql://postgres@127.0.0.1:5432/postgres)
  and Redis at ``DURABLEFLOW_TEST_REDIS_URL`` (else redis://127.0.0.1:6379/0) for events;
  a test needing one that does not answer is skipped with a loud reason (and fails
  when ``CI`` is set, like the rest of the integration suite).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from _moto import ACCESS_KEY, BUCKET, REGION, SECRET_KEY
from durableflow.errors import StorageError
from durableflow.storage import S3StorageProvider, StorageEvent, create_event_channel
from durableflow.testing import StorageHarness

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def moto_s3_backend(moto_endpoint: str) -> Any:
    """moto's in-process S3 backend, for seeding many objects fast (not for assertions)."""
    from moto.backends import get_backend
    from moto.core import DEFAULT_ACCOUNT_ID

    return get_backend("s3")[DEFAULT_ACCOUNT_ID]["global"]


def make_s3_provider(endpoint: str, bucket: str = BUCKET, **options: Any) -> S3StorageProvider:
    return S3StorageProvider(
        bucket,
        endpoint=endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        **options,
    )


@pytest.fixture
def s3_provider_factory(moto_endpoint: str) -> Any:
    """``factory(bucket=..., **options)`` building providers on the moto server."""

    def factory(bucket: str = BUCKET, **options: Any) -> S3StorageProvider:
        return make_s3_provider(moto_endpoint, bucket, **options)

    return factory


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard AWS variables, as a deployment would set them."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)


@pytest.fixture
async def s3_storage(moto_endpoint: str) -> AsyncIterator[S3StorageProvider]:
    async with make_s3_provider(moto_endpoint) as provider:
        yield provider


@pytest.fixture
def s3_harness(s3_storage: S3StorageProvider) -> StorageHarness:
    return StorageHarness(s3_storage, put_raw_object=s3_storage.put_raw_object)


@pytest.fixture
def unique_prefix() -> str:
    return f"tests/{uuid.uuid4().hex}"


@pytest.fixture
def raw_s3_store(moto_endpoint: str) -> Any:
    """An obstore handle on the bucket that bypasses durableflow, to check what is stored."""
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        endpoint=moto_endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        client_options={"allow_http": True},
    )


async def _channel_or_skip(url: str, what: str, variable: str) -> Any:
    channel = create_event_channel(url, channel=f"durableflow_test_{uuid.uuid4().hex[:12]}")
    probe = StorageEvent(key="probe", size=0, sha256="")
    try:
        await channel.publish(probe)
    except StorageError as exc:
        await channel.aclose()
        reason = (
            f"!!! {what} at {url.rpartition('@')[2]} does not answer ({exc}); set {variable} "
            "to a reachable server to run this test. SKIPPED, NOT PASSED !!!"
        )
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
            pytest.fail(f"CI is set, so {what} is required: {reason}", pytrace=False)
        pytest.skip(reason)
    return channel


@pytest.fixture
def postgres_dsn() -> str:
    return os.environ.get("DURABLEFLOW_TEST_DSN") or DEFAULT_DSN


@pytest.fixture
async def postgres_channel(postgres_dsn: str) -> AsyncIterator[Any]:
    """A Postgres NOTIFY channel with a unique name, skipped loudly if Postgres is down."""
    channel = await _channel_or_skip(postgres_dsn, "Postgres", "DURABLEFLOW_TEST_DSN")
    try:
        yield channel
    finally:
        await channel.aclose()


@pytest.fixture
async def redis_channel() -> AsyncIterator[Any]:
    """A Redis pub/sub channel with a unique name, skipped loudly if Redis is down."""
    url = os.environ.get("DURABLEFLOW_TEST_REDIS_URL") or DEFAULT_REDIS
    channel = await _channel_or_skip(url, "Redis", "DURABLEFLOW_TEST_REDIS_URL")
    try:
        yield channel
    finally:
        await channel.aclose()
