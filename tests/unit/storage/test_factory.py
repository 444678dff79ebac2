"""Choosing a provider from a URL or settings, and the errors that say what to fix."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from durableflow.errors import StorageError, StorageKeyError
from durableflow.storage import (
    FilesystemStorageProvider,
    MemoryStorageProvider,
    S3StorageProvider,
    StorageSettings,
    create_storage_provider,
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DURABLEFLOW_STORAGE_URL",
        "DURABLEFLOW_STORAGE_S3_ENDPOINT",
        "DURABLEFLOW_STORAGE_EVENTS_URL",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)


def test_memory_and_file_urls(tmp_path: Path) -> None:
    assert isinstance(create_storage_provider("memory://"), MemoryStorageProvider)
    provider = create_storage_provider(f"file://{tmp_path}")
    assert isinstance(provider, FilesystemStorageProvider)
    assert provider.root == str(tmp_path)


def test_relative_file_url_is_relative_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    provider = create_storage_provider("file://artefacts/store")
    assert isinstance(provider, FilesystemStorageProvider)
    assert provider.root == str(tmp_path / "artefacts" / "store")


def test_url_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLEFLOW_STORAGE_URL", f"file://{tmp_path}")
    assert isinstance(create_storage_provider(), FilesystemStorageProvider)
    assert isinstance(create_storage_provider(StorageSettings()), FilesystemStorageProvider)


def test_nothing_configured_says_which_variable_to_set() -> None:
    with pytest.raises(StorageError, match="set DURABLEFLOW_STORAGE_URL"):
        create_storage_provider()


@pytest.mark.parametrize(
    "url", ["ftp://host/path", "gs://bucket", "/just/a/path", "s3:/bucket", "azure://x"]
)
def test_unknown_scheme_lists_the_supported_ones(url: str) -> None:
    with pytest.raises(StorageError) as caught:
        create_storage_provider(url)
    message = str(caught.value)
    assert "unknown storage URL" in message
    for scheme in ("file://", "s3://", "minio://", "memory://"):
        assert scheme in message


def test_file_url_without_a_path() -> None:
    with pytest.raises(StorageError, match="names no folder"):
        create_storage_provider("file://")


@pytest.mark.parametrize("url", ["s3://", "minio://", "s3:///prefix-only"])
def test_missing_bucket(url: str) -> None:
    settings = StorageSettings(url=url, s3_endpoint="http://127.0.0.1:9")
    with pytest.raises(StorageError, match="names no bucket"):
        create_storage_provider(settings)


def test_invalid_bucket_name() -> None:
    with pytest.raises(StorageError, match="not a valid bucket name"):
        create_storage_provider("s3://Bad_Bucket")


def test_s3_url_with_prefix_endpoint_and_region() -> None:
    provider = create_storage_provider(
        "s3://artefacts/prod/eu?endpoint=http://127.0.0.1:9&region=eu-west-1"
    )
    assert isinstance(provider, S3StorageProvider)
    assert provider.bucket == "artefacts"


def test_s3_url_with_a_bad_prefix() -> None:
    with pytest.raises(StorageKeyError):
        create_storage_provider("s3://artefacts/../up")


def test_credentials_are_not_accepted_in_the_url() -> None:
    with pytest.raises(StorageError, match="credentials belong in the environment"):
        create_storage_provider("s3://artefacts?secret_access_key=oops")


def test_minio_needs_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(StorageError, match="DURABLEFLOW_STORAGE_S3_ENDPOINT"):
        create_storage_provider("minio://artefacts")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    assert isinstance(create_storage_provider("minio://artefacts"), S3StorageProvider)
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("DURABLEFLOW_STORAGE_S3_ENDPOINT", "http://127.0.0.1:9")
    assert isinstance(create_storage_provider("minio://artefacts"), S3StorageProvider)


def test_missing_s3_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import obstore` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "obstore", None)
    monkeypatch.setitem(sys.modules, "obstore.store", None)
    with pytest.raises(StorageError, match=r"pip install 'durableflow\[s3\]'"):
        create_storage_provider("s3://artefacts")
    with pytest.raises(StorageError, match=r"durableflow\[s3\]"):
        S3StorageProvider("artefacts")
    # The other providers do not need it.
    assert isinstance(create_storage_provider("memory://"), MemoryStorageProvider)


def test_invalid_setting_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURABLEFLOW_STORAGE_EVENT_PUBLISH_TIMEOUT", "-1")
    with pytest.raises(StorageError, match="DURABLEFLOW_STORAGE_EVENT_PUBLISH_TIMEOUT"):
        create_storage_provider("memory://")


def test_unknown_events_url_is_refused() -> None:
    settings = StorageSettings(url="memory://", events_url="amqp://broker")
    with pytest.raises(StorageError, match="postgresql://"):
        create_storage_provider(settings)


def test_bad_event_channel_name_is_refused() -> None:
    settings = StorageSettings(
        url="memory://", events_url="postgresql://127.0.0.1/db", events_channel="bad-name;"
    )
    with pytest.raises(StorageError, match="invalid storage event channel"):
        create_storage_provider(settings)


def test_a_non_url_argument_is_refused() -> None:
    with pytest.raises(StorageError, match="takes a storage URL or StorageSettings"):
        create_storage_provider(42)  # type: ignore[arg-type]
