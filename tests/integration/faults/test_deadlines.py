"""Every database call has a client-side deadline; a stalled connection is replaced."""

import time

import pytest

from durableflow._store.writers import WriterConnections


async def test_a_writer_whose_statement_stalls_fails_in_time_and_is_replaced(
    database_url: str,
) -> None:
    writers = WriterConnections(database_url, size=1, timeout=0.5)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=r"0\.5s"):
            await writers.run(lambda connection: connection.fetchval("SELECT pg_sleep(30)"))
        assert time.monotonic() - started < 3  # the watchdog struck, not pg_sleep's end
        # The next flush gets a fresh connection, not the stalled one.
        assert await writers.run(lambda connection: connection.fetchval("SELECT 1")) == 1
    finally:
        await writers.close()
