"""``Flow``: the object a service defines its workflows on, starts runs with, and runs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

from durableflow._store.schema_version import HEAD_REVISION
from durableflow.artefacts.service import ArtefactService
from durableflow.config import FlowSettings, build_settings, get_config
from durableflow.engine.registry import AsyncFunction, Registry, RetryPredicate, WorkflowDefinition
from durableflow.engine.serialization import Codec
from durableflow.errors import ConfigurationError
from durableflow.storage.protocol import StorageProtocol
from durableflow.surfaces.admin import AdminSurface
from durableflow.surfaces.artefacts import ArtefactsSurface
from durableflow.surfaces.graphs import GraphsSurface, GraphVisit, PublishedGraph
from durableflow.surfaces.messages import MessagesSurface, SignalRecord
from durableflow.surfaces.runs import RunsSurface, RunStatus, StepRecord
from durableflow.surfaces.scheduling import SchedulingSurface
from durableflow.surfaces.transactions import TransactionsSurface

if TYPE_CHECKING:
    # Imported by start_worker: a Flow that only starts runs, or reads them, never loads
    # the worker, its executor and its leader duties.
    from durableflow.runtime.worker import Worker

__all__ = [
    "Flow",
    "GraphVisit",
    "PublishedGraph",
    "RunStatus",
    "SchemaStatus",
    "SignalRecord",
    "StepRecord",
]


class StepDecorator(Protocol):
    """What ``@flow.step(...)`` with options returns: a decorator (for type checkers)."""

    @overload
    def __call__(self, fn: F, /) -> F: ...
    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, Awaitable[R]]: ...


logger = logging.getLogger("durableflow")

F = TypeVar("F", bound=AsyncFunction)
P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's durableflow schema stands against this library's migrations."""

    schema: str
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        """True when ``current`` is the newest revision this version ships."""
        return self.current == self.head


class Flow(
    RunsSurface,
    MessagesSurface,
    AdminSurface,
    ArtefactsSurface,
    SchedulingSurface,
    TransactionsSurface,
    GraphsSurface,
):
    """Workflows and steps, and the connection to the Postgres that makes them durable.

    ``Flow`` does no I/O when constructed: it connects on first use (``migrate``,
    ``start``, ``worker``...). Settings come from ``settings=``, else the keyword
    arguments, else ``DURABLEFLOW_*`` environment variables. With no database URL at all,
    an embedded Postgres is started in ``.durableflow/pgdata``. ``sqlalchemy_engine``
    (a SQLAlchemy ``AsyncEngine`` on the same database, asyncpg driver) is what
    ``@flow.transaction`` steps run on; without it one is made from the database URL.

    Example::

        flow = Flow(database_url="postgresql://app@127.0.0.1/app")

        @flow.step(retries=3)
        async def add_one(ctx: FlowContext, x: int) -> int:
            return x + 1

        @flow.workflow(name="count", version=1)
        async def count(ctx: FlowContext, n: int) -> int:
            x = 0
            for _ in range(n):
                x = await add_one(ctx, x)
            return x

        await flow.migrate()
        async with flow.worker():
            run_id = await flow.start(count, input=3)
            assert await flow.result(run_id) == 3
    """

    def __init__(
        self,
        database_url: str | None = None,
        *,
        settings: FlowSettings | None = None,
        schema: str | None = None,
        storage: str | StorageProtocol | None = None,
        sqlalchemy_engine: Any = None,
        **overrides: Any,
    ) -> None:
        if isinstance(storage, str):  # a URL is a setting; a provider object is kept as is
            overrides["storage_url"] = storage
            storage = None
        if settings is None:
            base = get_config().model_dump(exclude_unset=False)
            values = {**base, **overrides}
            if database_url is not None:
                values["database_url"] = database_url
            if schema is not None:
                values["schema_name"] = schema
            settings = build_settings(**values)
        elif database_url is not None or schema is not None or overrides:
            raise ConfigurationError(
                "pass either settings= or individual settings to Flow(), not both"
            )
        self.settings = settings
        self.registry = Registry()
        self._store = None
        self._connecting = None
        self._worker = None
        self._results = None
        self._code_hashes = {}
        self._artefact_service = ArtefactService(lambda: self.settings, storage)
        self._declared_schedules = {}
        self._init_transactions(sqlalchemy_engine)  # -- transactions: an AsyncEngine or None
        self._actions = {}  # -- graphs
        self._published = None
        self._pictures = {}

    def __repr__(self) -> str:
        return (
            f"<Flow schema={self.settings.schema_name!r} workflows={len(self.registry.workflows)}>"
        )

    # -- definitions ---------------------------------------------------------------

    @overload
    def step(self, fn: F) -> F: ...
    @overload
    def step(self, fn: Callable[P, R]) -> Callable[P, Awaitable[R]]: ...
    @overload
    def step(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        timeout: float | None = None,
        artefact: bool | None = None,
        should_retry: RetryPredicate | None = None,
    ) -> StepDecorator: ...

    def step(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        timeout: float | None = None,
        artefact: bool | None = None,
        should_retry: RetryPredicate | None = None,
    ) -> Any:
        """Declare a checkpointed step: ``async def step(ctx, *args, **kwargs) -> T``.

        Inside a workflow, a call runs the body at most until one attempt succeeds (or
        ``retries`` extra attempts fail, with exponential ``backoff`` capped at
        ``max_backoff``, jittered), then commits its output; on replay the recorded
        output is returned instead. ``T`` (the return annotation) must be
        JSON-serialisable through pydantic (checked here: ``SerializationError``), and
        the workflow receives the recorded value decoded, the same live and on replay.
        ``timeout`` bounds each attempt (``StepTimeout``, then retried), even if the body
        swallows the cancellation. ``should_retry(exc)`` returning False, or an exception
        deriving from (or wrapped in) ``NonRetryable``, fails the step at once. Failed
        attempts are recorded, so a crash during a backoff neither resets the attempt
        count nor skips the wait. ``timeout``, ``backoff`` and ``max_backoff`` must be
        finite and > 0. ``artefact=True`` (default: the Flow's ``artefacts`` setting)
        also writes the output to storage with a sidecar before its checkpoint commits
        (see docs/storage.md).

        A plain ``def`` body (for libraries that block: ``requests``, drivers) runs in
        the event loop's default thread pool; it is awaited like any step. Called
        outside a workflow, the step simply runs.
        """

        def decorate(function: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
            _, wrapped = self._declare_step(
                function,
                name=name,
                retries=retries,
                backoff=backoff,
                max_backoff=max_backoff,
                timeout=timeout,
                artefact=artefact,
                should_retry=should_retry,
            )
            return wrapped

        return decorate(fn) if fn is not None else decorate

    def workflow(
        self, *, name: str | None = None, version: int = 1, max_recoveries: int | None = None
    ) -> Callable[[F], F]:
        """Declare a workflow ``async def wf(ctx, input) -> output`` under ``name``/``version``.

        The body must be deterministic given its input and its steps' results: do I/O,
        randomness and clock reads in steps. Change the body only with a version bump
        (``durableflow audit`` checks this in CI). A run recovered more than
        ``max_recoveries`` times (taken over from a worker that went silent, or given
        back after an infrastructure error; default: the ``max_recoveries`` setting, 20)
        is stopped as ``dead``: a poison run does not consume workers forever.
        """

        def decorate(function: F) -> F:
            definition = WorkflowDefinition.from_function(
                function,
                name=name or function.__name__,
                version=version,
                max_recoveries=max_recoveries,
            )
            max_bytes = self.settings.max_payload_bytes
            for annotation, what in (
                (definition.input_type, "input"),
                (definition.output_type, "output"),
            ):  # an annotation pydantic cannot handle fails here, not in a run
                Codec(
                    annotation,
                    f"{what} of workflow {definition.name!r}",
                    max_bytes=max_bytes,
                    workflow=definition.name,
                )
            self.registry.add_workflow(definition)
            function.__durableflow_workflow__ = definition  # type: ignore[attr-defined]
            return function

        return decorate

    # -- connection ------------------------------------------------------------------

    @property
    def database_url(self) -> str | None:
        """The URL in use (the embedded server's once connected without a configured URL)."""
        return self._store.database_url if self._store else self.settings.database_url

    async def migrate(self) -> None:
        """Create or upgrade durableflow's schema; idempotent, safe from many processes."""
        store = await self._connected()
        if await store.schema_revision() == HEAD_REVISION:
            return  # nothing to do, and alembic stays out of this process
        from durableflow._store.migrations import upgrade

        await upgrade(
            store.database_url,
            self.settings.schema_name,
            lock_timeout=self.settings.migration_lock_timeout,
        )

    async def schema_status(self) -> SchemaStatus:
        """The schema's recorded revision and the newest this library ships."""
        store = await self._connected()
        return SchemaStatus(
            schema=self.settings.schema_name,
            current=await store.schema_revision(),
            head=HEAD_REVISION,
        )

    def migration_sql(self) -> str:
        """The SQL ``migrate()`` would run on an empty database, for review."""
        from durableflow._store.migrations import offline_sql

        return offline_sql(self.settings.schema_name)

    async def close(self) -> None:
        """Stop the worker (if any) and close connections."""
        if self._worker is not None:
            await self._worker.stop()
            self._worker = None
        if self._results is not None:
            await self._results.close()
            self._results = None
        await self._close_artefacts()
        await self._close_transactions()  # -- transactions
        self._published = None  # -- graphs: it reads through the store closed below
        if self._store is not None:
            store, self._store = self._store, None
            await store.close()

    async def __aenter__(self) -> Flow:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- workers ---------------------------------------------------------------------------

    @asynccontextmanager
    async def worker(
        self,
        concurrency: int | None = None,
        *,
        queues: list[str] | tuple[str, ...] = ("default",),
        shutdown_grace: float | None = None,
    ) -> AsyncIterator[Worker]:
        """Run a worker for the duration of an ``async with`` block.

        On exit the worker stops claiming, lets in-flight runs finish for
        ``shutdown_grace`` seconds, and releases what is left to other workers.
        """
        worker = await self.start_worker(concurrency, queues=queues)
        try:
            yield worker
        finally:
            await worker.stop(shutdown_grace)
            if self._worker is worker:
                self._worker = None

    async def start_worker(
        self, concurrency: int | None = None, *, queues: list[str] | tuple[str, ...] = ("default",)
    ) -> Worker:
        """Start a worker in the background; stop it with ``await worker.stop()``."""
        if self._worker is not None and self._worker.running:
            raise ConfigurationError("this Flow already runs a worker; stop it first")
        if not self.registry.workflows and not self._actions:
            raise ConfigurationError(
                "no workflow, graph or action is registered on this Flow; nothing to run"
            )
        from durableflow.artefacts.prune import apply_retention
        from durableflow.runtime.duties import build_leadership
        from durableflow.runtime.executor import RunExecutor
        from durableflow.runtime.worker import Worker

        store = await self._connected()
        graphs = await self._published_graphs()  # -- graphs: published ones run here too
        for definition in self.registry.workflows:
            self.code_hash(definition)
        await self._prepare_transactions()  # -- transactions: an engine elsewhere stops us here
        artefacts = await self._artefacts()
        executor = RunExecutor(
            store,
            self.registry,
            self.settings,
            self.code_hash,
            self._resolve_outcome,
            artefacts=artefacts,
            load_definition=graphs.load,
        )
        worker = Worker(
            store,
            self.registry,
            self.settings,
            executor,
            concurrency=concurrency or self.settings.worker_concurrency,
            queues=list(queues),
            leadership=(
                build_leadership(
                    store,
                    self.settings,
                    self.registry,
                    self.code_hash,
                    list(self._declared_schedules.values()),
                    retention=lambda epoch: apply_retention(artefacts, epoch=epoch),
                )
                if self.settings.leader_election
                else None
            ),
            graphs=graphs,
        )
        await worker.start()
        self._worker = worker
        return worker

    async def move_clock(self, seconds: float) -> float:
        """Shift the schema's clock by ``seconds`` for every connection (for tests)."""
        store = await self._connected()
        return await store.move_clock(seconds)
