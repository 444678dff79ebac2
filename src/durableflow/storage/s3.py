"""``S3StorageProvider`` (``s3://<bucket>``, ``minio://<bucket>``) on obstore.

Each artefact is two S3 objects: the bytes under the key, the JSON sidecar under
``<key>.meta.json``. The object's user metadata carries only a small ASCII index
(sidecar schema version, sha256, execution id) checked against S3's 2 KB limit here,
because test servers do not enforce it. An S3 PUT is atomic, so a reader sees the
old object or the new one; a crash between the two PUTs leaves an object whose
sidecar is missing or stale, which reads report as ``StorageIntegrityError``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

from durableflow.errors import StorageError
from durableflow.storage.base import BaseStorageProvider
from durableflow.storage.events import StorageEventPublisher
from durableflow.storage.keys import SCRATCH_PREFIX, SIDECAR_SUFFIX, sidecar_key
from durableflow.storage.metadata import StorageMetadata, build_object_index

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

DEFAULT_STREAM_PART_BYTES = 8 * 1024 * 1024
"""Multipart part size for ``write_stream`` (S3 needs at least 5 MiB per part)."""

DEFAULT_STREAM_CONCURRENCY = 4
"""Parts uploaded at once by ``write_stream``; memory held is about part size x this."""

_LIST_PAGE = 1000
_DELETE_BATCH = 1000


def import_obstore() -> Any:
    """The obstore module, or a ``StorageError`` saying how to install it."""
    try:
        import obstore
    except ImportError as exc:
        raise StorageError(
            "S3 storage needs the s3 extra: pip install 'durableflow[s3]' (it installs obstore)"
        ) from exc
    return obstore


def validate_bucket(bucket: str | None, url: str) -> str:
    """Return a well-formed bucket name or raise ``StorageError`` naming the URL."""
    if not bucket:
        raise StorageError(
            f"the storage URL {url!r} names no bucket: use s3://<bucket>[/<prefix>] or "
            "minio://<bucket>[/<prefix>] in DURABLEFLOW_STORAGE_URL"
        )
    if not _BUCKET.fullmatch(bucket):
        raise StorageError(
            f"{bucket!r} is not a valid bucket name: 3-63 lower-case letters, digits, '.' "
            "and '-', starting and ending with a letter or digit"
        )
    return bucket


def _first_line(exc: BaseException) -> str:
    return str(exc).split("\n", 1)[0][:500]


class S3StorageProvider(BaseStorageProvider):
    """Stores artefacts in an S3 (or S3-compatible) bucket through obstore.

    Credentials and region not given here come from the standard AWS variables
    (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``...). Give
    ``endpoint`` for MinIO, moto or any S3-compatible server; ``http://`` endpoints
    are allowed automatically.

    Example::

        storage = S3StorageProvider("artefacts", endpoint="http://127.0.0.1:9000",
                                    region="us-east-1")
        await storage.write("executions/r1/main/fetch/m1.json", b"{}")
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str | None = None,
        endpoint: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        allow_http: bool | None = None,
        stream_part_bytes: int = DEFAULT_STREAM_PART_BYTES,
        stream_concurrency: int = DEFAULT_STREAM_CONCURRENCY,
        events: StorageEventPublisher | None = None,
        event_publish_timeout: float = 2.0,
        owns_events: bool = False,
    ) -> None:
        super().__init__(
            events=events, event_publish_timeout=event_publish_timeout, owns_events=owns_events
        )
        obstore = import_obstore()
        from obstore.store import S3Store

        self._obstore = obstore
        self._bucket = validate_bucket(bucket, f"s3://{bucket}")
        self._endpoint = endpoint
        self._bucket_verified = False
        self._stream_part_bytes = max(stream_part_bytes, 5 * 1024 * 1024)
        self._stream_concurrency = max(stream_concurrency, 1)
        config: dict[str, Any] = {}
        if endpoint:
            config["endpoint"] = endpoint
        if region:
            config["region"] = region
        if access_key_id:
            config["access_key_id"] = access_key_id
        if secret_access_key:
            config["secret_access_key"] = secret_access_key
        if allow_http is None:
            allow_http = bool(endpoint and endpoint.startswith("http://"))
        client_options: dict[str, Any] = {"allow_http": allow_http, "connect_timeout": "5s"}
        try:
            self._store = S3Store(
                self._bucket,
                prefix=prefix or None,
                config=config,  # type: ignore[arg-type]
                client_options=client_options,  # type: ignore[arg-type]
            )
        except Exception as exc:
            raise StorageError(
                f"cannot configure S3 bucket {bucket!r}: {_first_line(exc)}"
            ) from exc

    @property
    def bucket(self) -> str:
        """The bucket name."""
        return self._bucket

    # ------------------------------------------------------------------ error handling

    def _failure(self, action: str, key: str, exc: BaseException) -> StorageError:
        text = str(exc)
        where = f" at {self._endpoint}" if self._endpoint else ""
        if "NoSuchBucket" in text:
            return StorageError(
                f"the bucket {self._bucket!r} does not exist{where}; create it or fix the "
                "bucket in DURABLEFLOW_STORAGE_URL"
            )
        if "InvalidAccessKeyId" in text or "SignatureDoesNotMatch" in text:
            return StorageError(
                f"S3 refused the credentials for bucket {self._bucket!r}{where}; check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or DURABLEFLOW_STORAGE_S3_*)"
            )
        return StorageError(
            f"S3 {action} of {key!r} in {self._bucket!r} failed: {_first_line(exc)}"
        )

    async def _get_or_none(self, name: str) -> bytes | None:
        try:
            result = await self._obstore.get_async(self._store, name)
            return bytes(await result.bytes_async())
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):
                raise self._failure("read", name, exc) from exc
            return None
        except Exception as exc:
            raise self._failure("read", name, exc) from exc

    async def _head(self, name: str) -> bool:
        try:
            await self._obstore.head_async(self._store, name)
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):
                raise self._failure("check", name, exc) from exc
            await self._ensure_bucket()
            return False
        except Exception as exc:
            raise self._failure("check", name, exc) from exc
        return True

    async def _ensure_bucket(self) -> None:
        """Tell a missing bucket from a missing key, once per provider.

        A HEAD answer has no body, so a 404 cannot say which of the two is missing;
        a listing names the bucket in its error.
        """
        if self._bucket_verified:
            return
        try:
            await self._obstore.list_with_delimiter_async(self._store, SCRATCH_PREFIX)
        except Exception as exc:
            raise self._failure("check", self._bucket, exc) from exc
        self._bucket_verified = True

    async def _put(self, name: str, payload: bytes, attributes: dict[str, str]) -> None:
        try:
            await self._obstore.put_async(
                self._store, name, payload, attributes=attributes, use_multipart=False
            )
        except Exception as exc:
            raise self._failure("write", name, exc) from exc

    # ------------------------------------------------------------------ primitives

    def _attributes(self, key: str, metadata: StorageMetadata) -> dict[str, str]:
        attributes = build_object_index(key, metadata)
        attributes["Content-Type"] = metadata.content_type or "application/octet-stream"
        return attributes

    async def _put_object(self, key: str, data: bytes, metadata: StorageMetadata) -> None:
        await self._put(key, data, self._attributes(key, metadata))

    async def _put_object_stream(
        self, key: str, chunks: AsyncIterator[bytes], metadata: StorageMetadata
    ) -> None:
        attributes = self._attributes(key, metadata)
        source_error: list[BaseException] = []

        async def guarded() -> AsyncIterator[bytes]:
            # Remember the caller's own error: obstore reports it as a generic failure.
            try:
                async for chunk in chunks:
                    yield chunk
            except BaseException as exc:
                source_error.append(exc)
                raise

        try:
            # Multipart: obstore aborts the upload if the stream fails, so nothing appears.
            await self._obstore.put_async(
                self._store,
                key,
                guarded(),
                attributes=attributes,
                use_multipart=True,
                chunk_size=self._stream_part_bytes,
                max_concurrency=self._stream_concurrency,
            )
        except Exception as exc:
            if source_error:
                raise source_error[0] from None
            raise self._failure("streamed write", key, exc) from exc

    async def _put_sidecar(self, key: str, payload: bytes) -> None:
        await self._put(sidecar_key(key), payload, {"Content-Type": "application/json"})

    async def _get_object_and_sidecar(self, key: str) -> tuple[bytes | None, bytes | None]:
        sidecar, data = await asyncio.gather(
            self._get_or_none(sidecar_key(key)), self._get_or_none(key)
        )
        return data, sidecar

    async def _get_sidecar(self, key: str) -> bytes | None:
        return await self._get_or_none(sidecar_key(key))

    async def _open_object(
        self, key: str, chunk_size: int
    ) -> tuple[int, AsyncIterator[bytes]] | None:
        try:
            result = await self._obstore.get_async(self._store, key)
        except FileNotFoundError as exc:
            if "NoSuchBucket" in str(exc):
                raise self._failure("read", key, exc) from exc
            return None
        except Exception as exc:
            raise self._failure("read", key, exc) from exc
        return int(result.meta["size"]), self._chunks(key, result, chunk_size)

    async def _chunks(self, key: str, result: Any, chunk_size: int) -> AsyncIterator[bytes]:
        stream = result.stream(min_chunk_size=chunk_size)
        while True:
            try:
                chunk = await stream.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                raise self._failure("read", key, exc) from exc
            yield bytes(chunk)

    async def _exists(self, key: str) -> tuple[bool, bool]:
        object_present, sidecar_present = await asyncio.gather(
            self._head(key), self._head(sidecar_key(key))
        )
        return object_present, sidecar_present

    async def _pages(self, prefix: str) -> AsyncIterator[Any]:
        stream = self._obstore.list(self._store, prefix or None, chunk_size=_LIST_PAGE)
        while True:
            try:
                page = await stream.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                raise self._failure("list", prefix, exc) from exc
            yield page

    async def _iter_keys(self, prefix: str) -> AsyncIterator[str]:
        # obstore fetches one page (up to 1,000 keys) per step of this loop.
        async for page in self._pages(prefix):
            for entry in page:
                yield entry["path"]

    async def _delete(self, key: str) -> bool:
        object_present, sidecar_present = await self._exists(key)
        try:
            # Sidecar first: an interrupted delete leaves an incomplete object, never a
            # sidecar vouching for bytes that are gone.
            if sidecar_present:
                await self._obstore.delete_async(self._store, sidecar_key(key))
            if object_present:
                await self._obstore.delete_async(self._store, key)
        except Exception as exc:
            raise self._failure("delete", key, exc) from exc
        return object_present or sidecar_present

    async def _delete_prefix(self, prefix: str) -> int:
        objects = 0
        async for page in self._pages(prefix):
            names = [entry["path"] for entry in page]
            for start in range(0, len(names), _DELETE_BATCH):
                batch = names[start : start + _DELETE_BATCH]
                try:
                    await self._obstore.delete_async(self._store, batch)
                except Exception as exc:
                    raise self._failure("delete", prefix, exc) from exc
            objects += sum(
                1
                for name in names
                if not name.endswith(SIDECAR_SUFFIX)
                and not name.rpartition("/")[2].startswith(SCRATCH_PREFIX)
            )
        return objects

    async def put_raw_object(self, key: str, data: bytes) -> None:
        """PUT bytes under ``key`` without touching its sidecar, as a crash mid-write would.

        For tests of the incomplete-write and integrity paths only.
        """
        await self._put(key, data, {})
