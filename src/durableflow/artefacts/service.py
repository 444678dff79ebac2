"""``ArtefactService``: one Flow's storage, its artefact statements and its settings.

The storage provider is built on first use (a Flow that never writes an artefact
never touches storage). Each artefact a step writes is announced by a storage event:
with ``DURABLEFLOW_STORAGE_EVENTS_URL`` set, the provider publishes it there; otherwise
the statement that records the artefact's lineage row NOTIFYs it on the events channel
(``DURABLEFLOW_STORAGE_EVENTS_CHANNEL``), delivered when that row commits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

from durableflow._store.artefacts import ArtefactStore
from durableflow._store.store import Store
from durableflow.artefacts.run import RunArtefacts, RunInfo
from durableflow.config import FlowSettings
from durableflow.errors import ConfigurationError, DatabaseError
from durableflow.storage import StorageProtocol, StorageSettings, create_storage_provider
from durableflow.storage.events import validate_channel_name


class ArtefactService:
    """Storage and artefact SQL for one Flow.

    Built with the Flow (no I/O); ``attach(store)`` when the Flow connects gives it
    the pool its statements and storage events use.
    """

    def __init__(
        self, settings: Callable[[], FlowSettings], storage: StorageProtocol | None
    ) -> None:
        # A getter: the CLI may replace a Flow's settings before its first I/O.
        self._settings = settings
        self._given = storage
        self._storage: StorageProtocol | None = storage
        self._owned: Any = None
        self._sql: ArtefactStore | None = None
        self._storage_settings: StorageSettings | None = None
        self._event_channel: str | None = None
        self._event_channel_known = False

    @property
    def settings(self) -> FlowSettings:
        return self._settings()

    def attach(self, store: Store) -> None:
        """Use ``store``'s pool for lineage, replay, prune and event statements."""
        if self._sql is None or self._sql.store is not store:
            self._sql = ArtefactStore(store)

    @property
    def sql(self) -> ArtefactStore:
        if self._sql is None:
            raise DatabaseError("the Flow is not connected; await flow.connect() first")
        return self._sql

    @property
    def storage_settings(self) -> StorageSettings:
        """``DURABLEFLOW_STORAGE_*`` settings, with the Flow's storage URL."""
        if self._storage_settings is None:
            try:
                self._storage_settings = StorageSettings(url=self.settings.storage_url)
            except ValueError as exc:
                raise ConfigurationError(
                    f"invalid storage settings: {exc}", setting="storage_url"
                ) from exc
        return self._storage_settings

    @property
    def storage(self) -> StorageProtocol:
        """The Flow's storage provider (built from ``storage_url`` on first use)."""
        if self._storage is None:
            provider = create_storage_provider(self.storage_settings)
            self._storage = self._owned = provider
        return self._storage

    @property
    def event_channel(self) -> str | None:
        """Where lineage statements NOTIFY storage events (None: the provider publishes)."""
        if not self._event_channel_known:  # settled with the storage settings, once
            settings = self.storage_settings
            self._event_channel = (
                None if settings.events_url else validate_channel_name(settings.events_channel)
            )
            self._event_channel_known = True
        return self._event_channel

    def check_ready(self) -> None:
        """Raise now what ``for_run`` would raise: the Flow not connected, bad storage
        settings. The executor calls it when it leaves a run's artefacts for later, so
        such a fault still stops the execution before the workflow starts."""
        _ = self.sql, self.event_channel

    def for_run(
        self,
        run_id: UUID,
        *,
        workflow: str,
        version: int,
        code_hash: str | None,
        config: str | None,
        config_hash: str | None,
        owner: str,
        epoch: int,
    ) -> RunArtefacts:
        """The artefacts of one execution of a run."""
        return RunArtefacts(
            RunInfo(
                run_id=run_id,
                workflow=workflow,
                version=version,
                code_hash=code_hash or None,
                config=json.loads(config) if config is not None else None,
                config_hash=config_hash,
                owner=owner,
                epoch=epoch,
            ),
            storage=lambda: self.storage,
            store=self.sql,
            inline_max_bytes=self.settings.inline_max_bytes,
            stream_above_bytes=self.settings.max_payload_bytes,
            event_channel=self.event_channel,
        )

    async def close(self) -> None:
        """Close the provider if this service built it (a provider given is the caller's)."""
        self._sql = None
        owned, self._owned = self._owned, None
        if owned is not None:
            self._storage = self._given
            await owned.aclose()
