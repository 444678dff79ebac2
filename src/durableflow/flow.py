"""``Flow``: the object a service defines its workflows on, starts runs with, and runs."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, overload
from uuid import UUID

from durableflow._store.records import FINAL_STATUSES, ClaimedRun, NewRun
from durableflow._store.store import Store
from durableflow.config import FlowSettings, build_settings, get_config
from durableflow.engine.ids import uuid7
from durableflow.engine.registry import AsyncFunction, Registry, StepDefinition, WorkflowDefinition
from durableflow.engine.serialization import Codec
from durableflow.engine.steps import make_step_callable
from durableflow.errors import (
    ConfigurationError,
    ResultTimeout,
    RunNotFound,
    WorkflowFailed,
    WorkflowNotFound,
)
from durableflow.runtime.executor import RunExecutor
from durableflow.runtime.results import Outcome, ResultWaiters
from durableflow.runtime.worker import Worker

logger = logging.getLogger("durableflow")

F = TypeVar("F", bound=AsyncFunction)


@dataclass(frozen=True)
class RunStatus:
    """A snapshot of one run, as ``flow.status()`` returns it."""

    id: UUID
    workflow: str
    version: int
    status: str
    output: Any
    error: dict[str, Any] | None
    queue: str
    owner: str | None
    lease_epoch: int
    claims: int
    idempotency_key: str | None
    correlation_id: str | None
    code_hash: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def done(self) -> bool:
        """True once the run succeeded, failed or was cancelled."""
        return self.status in FINAL_STATUSES


@dataclass(frozen=True)
class StepRecord:
    """One committed step of a run, as ``flow.steps()`` lists it."""

    step_id: int
    name: str
    kind: str
    output: Any
    error: dict[str, Any] | None
    attempt: int
    started_at: datetime | None
    finished_at: datetime


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


class Flow:
    """Workflows and steps, and the connection to the Postgres that makes them durable.

    ``Flow`` does no I/O when constructed: it connects on first use (``migrate``,
    ``start``, ``worker``...). Settings come from ``settings=``, else the keyword
    arguments, else ``DURABLEFLOW_*`` environment variables. With no database URL at all,
    an embedded Postgres is started in ``.durableflow/pgdata``.

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
        **overrides: Any,
    ) -> None:
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
        self._store: Store | None = None
        self._connecting: asyncio.Lock | None = None
        self._worker: Worker | None = None
        self._results: ResultWaiters | None = None
        self._code_hashes: dict[tuple[str, int], str] = {}

    def __repr__(self) -> str:
        return (
            f"<Flow schema={self.settings.schema_name!r} workflows={len(self.registry.workflows)}>"
        )

    # -- definitions ---------------------------------------------------------------

    @overload
    def step(self, fn: F) -> F: ...
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
    ) -> Callable[[F], F]: ...

    def step(
        self,
        fn: F | None = None,
        *,
        name: str | None = None,
        retries: int = 0,
        backoff: float = 0.5,
        max_backoff: float = 60.0,
        timeout: float | None = None,
    ) -> F | Callable[[F], F]:
        """Declare a checkpointed step: ``async def step(ctx, *args, **kwargs) -> T``.

        Inside a workflow, a call runs the body at most until one attempt succeeds (or
        ``retries`` extra attempts fail, with exponential ``backoff``), then commits its
        output; on replay the recorded output is returned instead. ``T`` (the return
        annotation) must be JSON-serialisable through pydantic. Called outside a
        workflow, the step simply runs.
        """

        def decorate(function: F) -> F:
            definition = StepDefinition.from_function(
                function,
                name=name,
                retries=retries,
                backoff=backoff,
                max_backoff=max_backoff,
                timeout=timeout,
            )
            self.registry.add_step(definition)
            wrapped = make_step_callable(
                definition, max_payload_bytes=self.settings.max_payload_bytes
            )
            return wrapped  # type: ignore[return-value]

        return decorate(fn) if fn is not None else decorate

    def workflow(self, *, name: str | None = None, version: int = 1) -> Callable[[F], F]:
        """Declare a workflow ``async def wf(ctx, input) -> output`` under ``name``/``version``.

        The body must be deterministic given its input and its steps' results: do I/O,
        randomness and clock reads in steps. Change the body only with a version bump
        (``durableflow audit`` checks this in CI).
        """

        def decorate(function: F) -> F:
            definition = WorkflowDefinition.from_function(
                function, name=name or function.__name__, version=version
            )
            self.registry.add_workflow(definition)
            function.__durableflow_workflow__ = definition  # type: ignore[attr-defined]
            return function

        return decorate

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

    def _definition(self, workflow: str | Callable[..., Any]) -> WorkflowDefinition:
        if isinstance(workflow, str):
            return self.registry.workflow(workflow)
        definition = getattr(workflow, "__durableflow_workflow__", None)
        if not isinstance(definition, WorkflowDefinition):
            raise ConfigurationError(
                f"{workflow!r} is not a workflow: decorate it with @flow.workflow(...) or pass "
                "the workflow's name"
            )
        return self.registry.workflow(definition.name, definition.version)

    # -- connection ------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the connection pool (starting an embedded Postgres when no URL is set)."""
        if self._store is not None:
            return
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:
            if self._store is not None:
                return
            url = self.settings.database_url
            if url is None:
                from durableflow._store.embedded import start_embedded_postgres

                url = await start_embedded_postgres(self.settings.embedded_data_dir)
            store = Store(
                url,
                self.settings.schema_name,
                min_size=self.settings.pool_min_size,
                max_size=self.settings.pool_max_size,
            )
            await store.open()
            self._store = store

    async def _connected(self) -> Store:
        if self._store is None:
            await self.connect()
        assert self._store is not None
        return self._store

    @property
    def database_url(self) -> str | None:
        """The URL in use (the embedded server's once connected without a configured URL)."""
        return self._store.database_url if self._store else self.settings.database_url

    async def migrate(self) -> None:
        """Create or upgrade durableflow's schema; idempotent, safe from many processes."""
        from durableflow._store.migrations import upgrade

        store = await self._connected()
        await upgrade(
            store.database_url,
            self.settings.schema_name,
            lock_timeout=self.settings.migration_lock_timeout,
        )

    async def schema_status(self) -> SchemaStatus:
        """The schema's recorded revision and the newest this library ships."""
        from durableflow._store.migrations import head_revision

        store = await self._connected()
        return SchemaStatus(
            schema=self.settings.schema_name,
            current=await store.schema_revision(),
            head=head_revision(),
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
        if self._store is not None:
            store, self._store = self._store, None
            await store.close()

    async def __aenter__(self) -> Flow:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- runs --------------------------------------------------------------------------

    async def start(
        self,
        workflow: str | Callable[..., Any],
        input: Any = None,
        *,
        idempotency_key: str | None = None,
        queue: str | None = None,
        priority: int = 0,
        correlation_id: str | None = None,
    ) -> UUID:
        """Start a run of ``workflow`` (its name or its function) and return the run id.

        The same ``idempotency_key`` always returns the same run. When this process runs
        a worker with a free slot and no ``queue`` is named, the run starts here at once;
        otherwise it is queued (``queue``, default ``"default"``) for any worker serving
        that queue and this workflow version. Among queued runs, higher ``priority``
        is claimed first, then older. ``correlation_id`` is recorded on the run and
        available as ``ctx.correlation_id``.
        """
        definition = self._definition(workflow)
        max_bytes = self.settings.max_payload_bytes
        if definition.takes_input:
            codec = Codec(
                definition.input_type, f"input of workflow {definition.name!r}", max_bytes=max_bytes
            )
            input_json: str | None = codec.dumps(codec.validate(input))
        else:
            input_json = None
        store = await self._connected()
        worker = self._worker
        direct = (
            queue is None
            and worker is not None
            and (definition.name, definition.version) in worker.workflow_keys
            and worker.reserve()
        )
        new_run = NewRun(
            id=uuid7(),
            workflow=definition.name,
            version=definition.version,
            code_hash=self.code_hash(definition),
            input=input_json,
            queue=queue or "default",
            priority=priority,
            owner=worker.id if direct and worker is not None else None,
            idempotency_key=idempotency_key,
            correlation_id=correlation_id,
        )
        try:
            run_id, created = await store.insert_run(new_run)
        except BaseException:
            if direct and worker is not None:
                worker.unreserve()
            raise
        if direct and worker is not None:
            if created:
                worker.spawn(
                    ClaimedRun(
                        id=run_id,
                        workflow=definition.name,
                        version=definition.version,
                        code_hash=new_run.code_hash,
                        input=input_json,
                        lease_epoch=1,
                        correlation_id=correlation_id,
                        fresh=True,
                    ),
                    reserved=True,
                )
            else:
                worker.unreserve()
        return run_id

    def _resolve_outcome(
        self,
        run_id: UUID,
        workflow: str,
        version: int,
        status: str,
        output: str | None,
        error: str | None,
    ) -> None:
        if self._results is not None:
            self._results.resolve(run_id, Outcome(workflow, version, status, output, error))

    def _is_executing_here(self, run_id: UUID) -> bool:
        return self._worker is not None and self._worker.is_executing(run_id)

    async def result(self, run_id: UUID | str, timeout: float | None = None) -> Any:
        """Wait for a run to finish and return its output.

        Raises ``WorkflowFailed`` (with the recorded error) if it failed or was
        cancelled, ``ResultTimeout`` after ``timeout`` seconds (the run goes on), and
        ``RunNotFound`` for an unknown id.
        """
        run_id = _as_uuid(run_id)
        store = await self._connected()
        if self._results is None:
            self._results = ResultWaiters(store, self._is_executing_here, max_delay=0.5)
        try:
            outcome = await self._results.wait(run_id, timeout)
        except TimeoutError:
            raise ResultTimeout(run_id, timeout or 0.0) from None
        return self._decode_outcome(run_id, outcome)

    def _decode_outcome(self, run_id: UUID, outcome: Outcome) -> Any:
        if outcome.status != "succeeded":
            error = json.loads(outcome.error) if outcome.error else {}
            raise WorkflowFailed(run_id, error, status=outcome.status)
        return self._decode_output(outcome.workflow, outcome.version, outcome.output)

    async def _run_row(self, run_id: UUID) -> Any:
        store = await self._connected()
        row = await store.get_run(run_id)
        if row is None:
            raise RunNotFound(run_id)
        return row

    def _decode_output(self, workflow: str, version: int, output: str | None) -> Any:
        if output is None:
            return None
        try:
            definition = self.registry.workflow(workflow, version)
        except WorkflowNotFound:  # started elsewhere: plain JSON is the best we can do
            return json.loads(output)
        return Codec(
            definition.output_type,
            f"output of workflow {definition.name!r}",
            max_bytes=self.settings.max_payload_bytes,
        ).loads(output)

    async def status(self, run_id: UUID | str) -> RunStatus:
        """A snapshot of a run: status, output or error, owner, timestamps."""
        row = await self._run_row(_as_uuid(run_id))
        return RunStatus(
            id=row["id"],
            workflow=row["workflow"],
            version=row["version"],
            status=row["status"],
            output=(
                self._decode_output(row["workflow"], row["version"], row["output"])
                if row["status"] == "succeeded"
                else None
            ),
            error=json.loads(row["error"]) if row["error"] else None,
            queue=row["queue"],
            owner=row["owner"],
            lease_epoch=row["lease_epoch"],
            claims=row["claims"],
            idempotency_key=row["idempotency_key"],
            correlation_id=row["correlation_id"],
            code_hash=row["code_hash"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
        )

    async def steps(self, run_id: UUID | str) -> list[StepRecord]:
        """The committed steps of a run, in order (outputs as plain JSON values)."""
        store = await self._connected()
        rows = await store.step_rows(_as_uuid(run_id))
        return [
            StepRecord(
                step_id=row["step_id"],
                name=row["name"],
                kind=row["kind"],
                output=json.loads(row["output"]) if row["output"] is not None else None,
                error=json.loads(row["error"]) if row["error"] else None,
                attempt=row["attempt"],
                started_at=row["started_at"],
                finished_at=row["finished_at"],
            )
            for row in rows
        ]

    async def cancel(self, run_id: UUID | str, reason: str = "cancelled") -> bool:
        """Cancel a run that has not finished; False if it already had."""
        store = await self._connected()
        return await store.cancel_run(_as_uuid(run_id), reason)

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
        if not self.registry.workflows:
            raise ConfigurationError("no workflow is registered on this Flow; nothing to run")
        store = await self._connected()
        for definition in self.registry.workflows:
            self.code_hash(definition)
        executor = RunExecutor(
            store, self.registry, self.settings, self.code_hash, self._resolve_outcome
        )
        worker = Worker(
            store,
            self.registry,
            self.settings,
            executor,
            concurrency=concurrency or self.settings.worker_concurrency,
            queues=list(queues),
        )
        await worker.start()
        self._worker = worker
        return worker

    async def move_clock(self, seconds: float) -> float:
        """Shift the schema's clock by ``seconds`` for every connection (for tests)."""
        store = await self._connected()
        return await store.move_clock(seconds)


def _as_uuid(run_id: UUID | str) -> UUID:
    if isinstance(run_id, UUID):
        return run_id
    try:
        return UUID(str(run_id))
    except ValueError:
        raise RunNotFound(run_id) from None
