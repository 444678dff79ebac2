"""Operating runs: ``list_runs``, ``count_runs``, ``describe_run``, ``resume``, ``delete``,
``list_workers``, and ``admin_app()`` (the web UI as an ASGI app)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from durableflow._store import admin as admin_store
from durableflow._store.records import RUN_STATUSES
from durableflow.admin.records import RunDetail, RunPage, RunSummary, StepAttempt, WorkerInfo
from durableflow.errors import ConfigurationError, RunNotFound
from durableflow.surfaces.base import FlowCore, as_run_id

logger = logging.getLogger("durableflow.admin")

_SUMMARY_FIELDS = (
    "id",
    "workflow",
    "version",
    "status",
    "queue",
    "priority",
    "parent_id",
    "correlation_id",
    "idempotency_key",
    "owner",
    "claims",
    "created_at",
    "started_at",
    "finished_at",
    "updated_at",
    "available_at",
    "error_type",
    "error_message",
)


def _as_list(value: str | Sequence[str] | None) -> list[str] | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


def _aware(value: datetime | None) -> datetime | None:
    """Naive datetimes are taken as UTC, so a filter never depends on the server's zone."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _loads(text: str | None) -> Any:
    return json.loads(text) if text is not None else None


class AdminSurface(FlowCore):
    """``Flow``'s operator methods: find runs, look inside them, resume or delete them."""

    def _run_filter(
        self,
        *,
        status: str | Sequence[str] | None,
        workflow: str | Sequence[str] | None,
        queue: str | Sequence[str] | None,
        parent_id: UUID | str | None,
        ids: Sequence[UUID | str] | None,
        since: datetime | None,
        until: datetime | None,
        correlation_id: str | None,
    ) -> admin_store.RunFilter:
        statuses = _as_list(status)
        unknown = sorted(set(statuses or ()) - set(RUN_STATUSES))
        if unknown:
            raise ConfigurationError(
                f"unknown run status {', '.join(map(repr, unknown))}; "
                f"statuses are {', '.join(RUN_STATUSES)}",
                setting="status",
            )
        return admin_store.RunFilter(
            status=statuses,
            workflow=_as_list(workflow),
            queue=_as_list(queue),
            parent_id=as_run_id(parent_id) if parent_id is not None else None,
            ids=[as_run_id(run_id) for run_id in ids] if ids is not None else None,
            since=_aware(since),
            until=_aware(until),
            correlation_id=correlation_id,
        )

    async def list_runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        workflow: str | Sequence[str] | None = None,
        queue: str | Sequence[str] | None = None,
        parent_id: UUID | str | None = None,
        ids: Sequence[UUID | str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        correlation_id: str | None = None,
        limit: int = 100,
        cursor: str | None = None,
        descending: bool = False,
    ) -> RunPage:
        """A page of runs matching every filter given, ordered by creation time.

        Each filter takes one value or a list (``status=["failed", "dead"]``);
        ``since``/``until`` bound ``created_at`` (``since`` inclusive; naive datetimes
        are UTC). Pages are keyset-paginated: pass the page's ``next_cursor`` (None on
        the last page) with the same filters to get the next one. Each filter is
        served by an index, so a page costs the same at a million runs as at ten.

        Example::

            page = await flow.list_runs(status="failed", descending=True, limit=20)
            for run in page:
                print(run.id, run.workflow, run.error_type)
            older = await flow.list_runs(status="failed", descending=True,
                                         cursor=page.next_cursor)
        """
        where = self._run_filter(
            status=status,
            workflow=workflow,
            queue=queue,
            parent_id=parent_id,
            ids=ids,
            since=since,
            until=until,
            correlation_id=correlation_id,
        )
        store = await self._connected()
        rows, next_cursor = await admin_store.list_runs(
            store, where, limit=limit, cursor=cursor, descending=descending
        )
        return RunPage(
            runs=[RunSummary(**{name: row[name] for name in _SUMMARY_FIELDS}) for row in rows],
            next_cursor=next_cursor,
        )

    async def count_runs(
        self,
        *,
        status: str | Sequence[str] | None = None,
        workflow: str | Sequence[str] | None = None,
        queue: str | Sequence[str] | None = None,
        parent_id: UUID | str | None = None,
        ids: Sequence[UUID | str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        correlation_id: str | None = None,
    ) -> int:
        """How many runs ``list_runs`` with the same filters would page through.

        An exact count: its cost grows with the number of matching runs.
        """
        where = self._run_filter(
            status=status,
            workflow=workflow,
            queue=queue,
            parent_id=parent_id,
            ids=ids,
            since=since,
            until=until,
            correlation_id=correlation_id,
        )
        return await admin_store.count_runs(await self._connected(), where)

    async def describe_run(self, run_id: UUID | str) -> RunDetail:
        """Everything about one run: the summary fields plus input, output and error.

        Values are the stored JSON (not decoded through the workflow's annotations).
        """
        row = await admin_store.describe_run(await self._connected(), as_run_id(run_id))
        error = _loads(row["error"])
        summary = {name: row[name] for name in _SUMMARY_FIELDS[:-2]}
        return RunDetail(
            **summary,
            error_type=error.get("type") if isinstance(error, dict) else None,
            error_message=error.get("message") if isinstance(error, dict) else None,
            code_hash=row["code_hash"],
            lease_epoch=row["lease_epoch"],
            config_hash=row["config_hash"],
            input=_loads(row["input"]),
            output=_loads(row["output"]),
            error=error,
            deadline=row["deadline"],
            waiting_for=tuple(row["waiting_for"] or ()),
            replayed_from=row["replayed_from"],
            forked_from=row["forked_from"],
        )

    async def step_attempts(self, run_id: UUID | str) -> list[StepAttempt]:
        """The failed attempts of a run's steps, by step then attempt.

        A step that failed and was retried has a row per failed attempt; a step whose
        error an operator's ``resume`` set aside keeps that error here. ``RunNotFound``
        for an unknown id.
        """
        store = await self._connected()
        run_id = as_run_id(run_id)
        rows = await admin_store.step_attempts(store, run_id)
        if not rows and not await store.run_exists(run_id):
            raise RunNotFound(run_id)
        return [
            StepAttempt(
                step_id=row["step_id"],
                attempt=row["attempt"],
                name=row["name"],
                error=json.loads(row["error"]),
                started_at=row["started_at"],
                failed_at=row["failed_at"],
                retry_at=row["retry_at"],
            )
            for row in rows
        ]

    async def resume(self, run_id: UUID | str, *, force: bool = False) -> None:
        """Queue a ``failed``, ``cancelled``, ``dead`` or ``blocked`` run again.

        Any worker then continues it by replay: every step whose checkpoint committed
        returns its recorded output; the errors of its failed steps are set aside (kept
        in ``step_attempts()``) so those steps run again. A step whose failure the
        workflow caught runs again too.

        A ``blocked`` run (its code changed without a version bump) resumes once a live
        worker registered the run's recorded code hash for its workflow version and
        queue; ``force=True`` resumes it anyway, and the code that claims it next
        continues it. Raises ``RunActionRefused`` for a run that succeeded or is still
        queued, running or waiting, and ``RunNotFound`` for an unknown id.

        Example::

            await flow.resume(run_id)
            print(await flow.result(run_id))
        """
        run_id = as_run_id(run_id)
        store = await self._connected()
        resumed = await admin_store.resume_run(
            store, run_id, force=force, lease_ttl=self.settings.lease_ttl
        )
        logger.info(
            "run %s resumed (was %s)%s",
            run_id,
            resumed.previous_status,
            "".join(
                f"; step {name!r} (#{step}) runs again" for step, name in resumed.retried_steps
            ),
            extra={
                "event": "run_resumed",
                "run_id": str(run_id),
                "previous_status": resumed.previous_status,
                "forced": resumed.forced,
            },
        )

    async def delete(self, run_id: UUID | str) -> None:
        """Delete a finished (or ``blocked``) run and every row recorded for it.

        Steps, attempts and any other rows of the run (signals, events...) go with it;
        artefacts in storage stay. Raises ``RunActionRefused`` while the run is queued,
        running or waiting (cancel it first), ``RunNotFound`` for an unknown id.
        """
        run_id = as_run_id(run_id)
        tables = await admin_store.delete_run(await self._connected(), run_id)
        logger.info(
            "run %s deleted (%s)",
            run_id,
            ", ".join(tables),
            extra={"event": "run_deleted", "run_id": str(run_id)},
        )

    async def list_workers(self) -> list[WorkerInfo]:
        """Registered workers, newest first; ``alive`` if seen within the lease TTL."""
        rows = await admin_store.list_workers(
            await self._connected(), lease_ttl=self.settings.lease_ttl
        )
        return [
            WorkerInfo(
                id=row["id"],
                host=row["host"],
                pid=row["pid"],
                queues=list(row["queues"]),
                workflows=json.loads(row["workflows"]),
                started_at=row["started_at"],
                heartbeat_at=row["heartbeat_at"],
                alive=row["alive"],
                heartbeat_age=(row["now"] - row["heartbeat_at"]).total_seconds(),
            )
            for row in rows
        ]

    def admin_app(self, *, token: str | None = None, title: str = "durableflow") -> Any:
        """The web UI as an ASGI app (Starlette), to serve or mount in your own app.

        Read-only unless ``token`` (default: ``DURABLEFLOW_UI_TOKEN``) is set; actions
        then need it. Needs the ``ui`` extra: ``pip install 'durableflow[ui]'``.

        Example::

            app = FastAPI()
            app.mount("/durableflow", flow.admin_app())
        """
        try:
            from durableflow.web import create_app
        except ImportError as exc:
            raise ConfigurationError(
                f"the web UI needs the 'ui' extra ({exc.name} is missing): "
                "pip install 'durableflow[ui]'"
            ) from exc
        return create_app(self, token=token, title=title)
