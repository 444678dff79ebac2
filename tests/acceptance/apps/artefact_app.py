"""Artefact pipelines for the crash, prune and memory tests, on the filesystem.

Storage is ``ARTEFACT_ROOT``. Two switches let a test stop a process at an exact point
and kill it there (the pause only waits; everything else is the real provider):

- ``PAUSE_AFTER_WRITE=<text>``: after writing an artefact whose key contains the text
  (object and sidecar stored, before its lineage row and checkpoint), print
  ``PAUSED <key>`` on stderr and wait;
- ``PAUSE_AFTER_PRUNED_PREFIX=<n>``: after deleting the n-th run's storage prefix in a
  prune (before its rows), print ``PAUSED prune`` and wait.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterable, AsyncIterator

from apps.ledger import install_event_echo, record_execution
from durableflow import ArtefactRef, Flow, FlowContext
from durableflow.storage import FilesystemStorageProvider, StorageMetadata, StoredObject

PIPELINE = "artefact.pipeline"
BIG = "artefact.big"
CHUNK = bytes(range(256)) * 4096  # 1 MiB


class PausingFilesystemStorage(FilesystemStorageProvider):
    """The filesystem provider, with the test's pause points."""

    def __init__(self, root: str) -> None:
        super().__init__(root)
        self._pruned_prefixes = 0

    async def _pause(self, what: str) -> None:
        sys.stderr.write(f"PAUSED {what}\n")
        sys.stderr.flush()
        await asyncio.sleep(3600)

    async def write(
        self, key: str, data: bytes, metadata: StorageMetadata | None = None
    ) -> StoredObject:
        stored = await super().write(key, data, metadata)
        pause = os.environ.get("PAUSE_AFTER_WRITE")
        if pause and pause in key:
            await self._pause(key)
        return stored

    async def delete_prefix(self, prefix: str) -> int:
        removed = await super().delete_prefix(prefix)
        self._pruned_prefixes += 1
        if str(self._pruned_prefixes) == os.environ.get("PAUSE_AFTER_PRUNED_PREFIX"):
            await self._pause("prune")
        return removed


def build_flow(
    database_url: str | None = None, root: str | None = None, *, ledger: bool = True
) -> Flow:
    """The app's Flow; ``ledger=False`` for a test that runs the steps in its own process.

    (The test process must not use the ledger module: its pool globals would then hold
    objects, and the audit's code hash of other apps using it would no longer match
    their workers'.)
    """
    storage = PausingFilesystemStorage(root or os.environ["ARTEFACT_ROOT"])
    flow = (
        Flow(database_url=database_url, storage=storage) if database_url else Flow(storage=storage)
    )

    @flow.step(artefact=True)
    async def fetch(ctx: FlowContext, url: str) -> dict[str, str]:
        if ledger:
            await record_execution(ctx)
        return {"url": url, "text": f"text of {url}"}

    @flow.step(artefact=True)
    async def convert(ctx: FlowContext, page: dict[str, str]) -> dict[str, object]:
        if ledger:
            await record_execution(ctx)
        return {"url": page["url"], "words": page["text"].split(), "pid": os.getpid()}

    @flow.step(artefact=True)
    async def summarise(ctx: FlowContext, doc: dict[str, object]) -> str:
        if ledger:
            await record_execution(ctx)
        return f"{doc['url']}: {len(doc['words'])} words"  # type: ignore[arg-type]

    @flow.workflow(name=PIPELINE, version=1)
    async def pipeline(ctx: FlowContext, url: str) -> str:
        return await summarise(ctx, await convert(ctx, await fetch(ctx, url)))

    async def chunks(count: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            yield CHUNK

    @flow.step()
    async def write_big(ctx: FlowContext, megabytes: int) -> ArtefactRef:
        stream: AsyncIterable[bytes] = chunks(megabytes)
        return await ctx.write_artefact("big.bin", stream, content_type="application/octet-stream")

    @flow.workflow(name=BIG, version=1)
    async def big(ctx: FlowContext, megabytes: int) -> ArtefactRef:
        return await write_big(ctx, megabytes)

    return flow


install_event_echo()
flow = build_flow() if "ARTEFACT_ROOT" in os.environ else None
