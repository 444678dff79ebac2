"""``FlowCore``: the state and plumbing every surface of ``Flow`` shares."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from uuid import UUID

from durableflow.config import FlowSettings
from durableflow.engine.ids import as_run_id
from durableflow.engine.registry import (
    Registry,
    RetryPredicate,
    StepDefinition,
    WorkflowDefinition,
)
from durableflow.engine.steps import make_step_callable

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
                plan_refresh=self.settings.plan_refresh_interval,
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

    def _declare_step(
        self,
        function: Any,
        *,
        name: str | None,
        retries: int,
        backoff: float,
        max_backoff: float,
        timeout: float | None,
        artefact: bool | None,
        should_retry: RetryPredicate | None = None,
    ) -> tuple[StepDefinition, Callable[..., Any]]:
        """Register ``function`` as a step; its definition and its checkpointed callable
        (``@flow.step``, and ``@flow.action`` for graphs). Nothing is registered when the
        declaration is refused (a bad option, an annotation JSON cannot carry)."""
        definition = StepDefinition.from_function(
            function,
            name=name,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            timeout=timeout,
            artefact=self.settings.artefacts == "all" if artefact is None else artefact,
            should_retry=should_retry,
        )
        wrapped = make_step_callable(definition, max_payload_bytes=self.settings.max_payload_bytes)
        self.registry.add_step(definition)
        return definition, wrapped

    def _definition(self, workflow: str | Any) -> WorkflowDefinition:
        """The registered definition of a workflow given by name or by its function."""
        return self.registry.definition_of(workflow)

    # -- graphs: GraphsSurface (surfaces/graphs.py) overrides these three------------------

    async def _resolve_definition(self, workflow: str | Any) -> WorkflowDefinition:
        """What ``flow.start`` runs for ``workflow``; graphs add published ones."""
        return self._definition(workflow)

    async def _graph_state(self, run_id: UUID, workflow: str, version: int) -> str | None:
        """The current state of a graph run; None for a workflow's run."""
        return None

    async def _graph_initial(self, workflow: str, version: int) -> str | None:
        """The initial state of the graph runs of ``(workflow, version)`` walk; None for a
        workflow."""
        return None


__all__ = ["FlowCore", "as_run_id"]
