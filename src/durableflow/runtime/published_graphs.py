"""Published graphs on demand: what lets a running worker run a graph published after it started.

A worker claims only runs of the (workflow, version) pairs it serves
(``Worker.workflow_keys``), so a graph published while it runs must join that list
before a run of it can be claimed. ``PublishedGraphs`` (one per Flow) loads published
versions from the graphs table, builds each with the Flow's actions, registers it,
and adds its key to the attached worker's list:

* when the worker starts (every published version, before the first claim);
* when a version is published (NOTIFY on the graphs channel, sent in the statement
  that stores it), and every ``REFRESH_POLLS`` poll intervals in case a NOTIFY was
  missed (a listener reconnecting);
* on demand, when ``flow.start`` names a graph this process does not have, or a run
  is claimed whose version is not registered here.

A version this Flow cannot build (an action it does not define) is skipped with a
``graph_load_failed`` warning, once per version: its runs are left to workers that
can run them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from durableflow._store.graphs import GraphRow, GraphStore
from durableflow._store.store import Store
from durableflow.config import FlowSettings
from durableflow.engine.registry import Registry, WorkflowDefinition
from durableflow.errors import DurableFlowError, GraphError, WorkflowNotFound

logger = logging.getLogger("durableflow.graphs")

# A refresh without a NOTIFY every this many poll intervals (10 s by default).
REFRESH_POLLS = 10

GraphBuilder = Callable[[GraphRow], WorkflowDefinition]


class PublishedGraphs:
    """Loads published graph versions into a Flow's registry (see the module docstring)."""

    def __init__(
        self, store: Store, registry: Registry, settings: FlowSettings, build: GraphBuilder
    ) -> None:
        self.graphs = GraphStore(store)
        self._registry = registry
        self._settings = settings
        self._build = build
        self._failed: set[tuple[str, int]] = set()  # versions this Flow cannot build
        self._worker_keys: list[tuple[str, int]] | None = None
        self._wake_claims: Callable[[], None] = lambda: None
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- loading -------------------------------------------------------------------------

    async def load(
        self, name: str, version: int | None = None, *, strict: bool = False
    ) -> WorkflowDefinition | None:
        """The definition of a published version (the highest when ``version`` is None),
        loaded from the table and registered; None when there is no such version, or
        when this Flow cannot build it (``strict``: the ``GraphError`` saying why)."""
        if version is None:
            version = await self.graphs.latest_version(name)
            if version is None:
                return None
        known = self._registered(name, version)
        if known is not None:
            return known
        row = await self.graphs.get(name, version)
        if row is None:
            return None
        return self._add(row, strict=strict)

    async def refresh(self) -> int:
        """Load every published version not registered yet; how many were loaded."""
        loaded = 0
        for name, version in await self.graphs.keys():
            if (name, version) in self._failed or self._registered(name, version) is not None:
                continue
            if await self.load(name, version) is not None:
                loaded += 1
        return loaded

    def _registered(self, name: str, version: int) -> WorkflowDefinition | None:
        try:
            definition = self._registry.workflow(name, version)
        except WorkflowNotFound:
            return None
        self._serve(definition)
        return definition

    def _add(self, row: GraphRow, *, strict: bool) -> WorkflowDefinition | None:
        key = (row.name, row.version)
        known = self._registered(*key)  # loaded meanwhile by another task
        if known is not None:
            return known
        try:
            definition = self._build(row)
        except GraphError as exc:
            if key not in self._failed:
                self._failed.add(key)
                logger.warning(
                    "published graph %s version %d cannot run here: %s",
                    row.name,
                    row.version,
                    exc,
                    extra={"event": "graph_load_failed", "graph": row.name},
                )
            if strict:
                raise
            return None
        self._registry.add_workflow(definition)
        self._serve(definition)
        logger.info(
            "loaded published graph %s version %d",
            row.name,
            row.version,
            extra={"event": "graph_loaded", "graph": row.name},
        )
        return definition

    def _serve(self, definition: WorkflowDefinition) -> None:
        """Let the attached worker claim runs of ``definition``."""
        keys = self._worker_keys
        key = (definition.name, definition.version)
        if keys is not None and key not in keys:
            keys.append(key)  # the very list the worker's claims bind
            self._wake_claims()

    # -- the worker's side ---------------------------------------------------------------

    def attach(self, workflow_keys: list[tuple[str, int]], wake_claims: Callable[[], None]) -> None:
        """Called by the worker: the list of keys its claims use, and how to wake them."""
        self._worker_keys = workflow_keys
        self._wake_claims = wake_claims
        for definition in self._registry.workflows:
            self._serve(definition)

    async def listen(self, connection: Any) -> None:
        """Add the graphs channel to the worker's LISTEN connection."""
        await self.graphs.listen(connection, self._kick.set)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._refresh_loop(), name="durableflow-graphs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._worker_keys = None
        self._wake_claims = lambda: None

    async def _refresh_loop(self) -> None:
        interval = self._settings.poll_interval * REFRESH_POLLS
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await self._kick.wait()
            self._kick.clear()
            try:
                await self.refresh()
            except DurableFlowError as exc:
                logger.warning(
                    "loading published graphs failed: %s",
                    exc,
                    extra={"event": "graph_load_failed"},
                )
