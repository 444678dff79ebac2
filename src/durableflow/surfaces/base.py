"""``FlowCore``: the state and plumbing every surface of ``Flow`` shares."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from durableflow.config import FlowSettings
from durableflow.engine.ids import as_run_id
from durableflow.engine.registry import Registry, WorkflowDefinition

if TYPE_CHECKING:
    from durableflow._store.store import Store
    from durableflow.runtime.results import ResultWaiters
    from durableflow.runtime.worker import Worker


class FlowCore:
    """Settings, definitions and the connection; the surfaces build on these.

    Not used on its own: ``Flow`` derives from it and from every surface.
    """

    settings: FlowSettings
    registry: Registry
    _store: Store | None
    _connecting: asyncio.Lock | None
    _worker: Worker | None
    _results: ResultWaiters | None
    _code_hashes: dict[tuple[str, int], str]

    async def connect(self) -> None:
        """Open the connection pool (starting an embedded Postgres when no URL is set)."""
        if self._store is not None:
            return
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._store is not None:
                return
            from durableflow._store.store import Store

            url = self.settings.database_url
            if url is None:
                from durableflow._store.embedded import start_embedded_postgres

                url = await start_embedded_postgres(self.settings.embedded_data_dir)
            store = Store(
                url,
                self.settings.schema_name,
                min_size=self.settings.pool_min_size,
                max_size=self.settings.pool_max_size,
                timeout=self.settings.database_timeout,
                retry_timeout=self.settings.transient_retry_timeout,
            )
            await store.open()
            self._store = store

    async def _connected(self) -> Store:
        if self._store is None:
            await self.connect()
        assert self._store is not None
        return self._store

    def code_hash(self, definition: WorkflowDefinition) -> str:
        """The audit's code hash of a definition (computed once per process)."""
        key = (definition.name, definition.version)
        cached = self._code_hashes.get(key)
        if cached is None:
            from durableflow.audit import compute_code_hash

            cached = compute_code_hash(definition, self.registry)
            definition.code_hash = cached
            self._code_hashes[key] = cached
        return cached

    def _definition(self, workflow: str | Any) -> WorkflowDefinition:
        """The registered definition of a workflow given by name or by its function."""
        return self.registry.definition_of(workflow)


__all__ = ["FlowCore", "as_run_id"]
