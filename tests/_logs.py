"""The errors a test's log records report.

asyncpg 0.32 leaves one kind of error behind that no code of ours can retrieve: a
connection it opens with ``sslmode=prefer`` (the default) waits for the server's answer
to its SSL request in a future made before the TCP connection exists. When the task
opening it is cancelled at the wrong moment (for one: asyncpg cancels its own cancel-request
connection when the connection it was cancelling is terminated), the transport is
closed, that future gets ``ConnectionError('unexpected connection_lost() call')``, and
nothing ever awaits it; asyncio logs "Future exception was never retrieved" when it is
garbage-collected, possibly during a later test (asyncpg issues #1211, #1310). Under
terminated backends it showed up about once in seven full suites. The connections
durableflow opens itself no longer do this (``_store/connecting.py`` keeps their
connects out of reach of cancellation, ``tests/integration/faults/test_cancelled_connects.py``);
asyncpg's cancel-request connection is its own. It is left out here, and nothing
else: every other ERROR record fails the tests that use this.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

ASYNCPG_LEFT_BEHIND = ("Future exception was never retrieved", "unexpected connection_lost() call")


def error_messages(records: Iterable[logging.LogRecord]) -> list[str]:
    """The messages of the records at ERROR or above, but for asyncpg's left-behind future."""
    return [
        message
        for record in records
        if record.levelno >= logging.ERROR
        and not _asyncpg_left_behind(record, message := record.getMessage())
    ]


def _asyncpg_left_behind(record: logging.LogRecord, message: str) -> bool:
    return record.name == "asyncio" and all(part in message for part in ASYNCPG_LEFT_BEHIND)
