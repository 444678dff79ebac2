"""The test side of the acceptance tests: real child processes, and polling helpers.

Not an app module: the test process imports it (via ``conftest.py`` and the tests) to
start ``python -m durableflow.cli ...`` children with ``tests/acceptance`` on their
``PYTHONPATH``, so ``apps.<module>:flow`` imports in them. Output goes to files, never
to pipes nobody reads, so a chatty worker can never block on a full pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

ACCEPTANCE_DIR = Path(__file__).resolve().parents[1]

# Fast liveness for crash tests: a dead worker's runs move after 1.5 s.
FAST_WORKER_SETTINGS = {
    "DURABLEFLOW_HEARTBEAT_INTERVAL": "0.2",
    "DURABLEFLOW_LEASE_TTL": "1.5",
    "DURABLEFLOW_POLL_INTERVAL": "0.1",
}


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process: ours minus any DURABLEFLOW_* setting, plus ``extra``.

    Settings a developer exported in their shell must not leak into the children; each
    test says exactly which settings its processes get. Nor do ``COLUMNS`` and ``LINES``,
    which pytest-xdist's workers export (80x24): a process on a terminal takes its width
    from the terminal, as it does at a shell that exports neither.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("DURABLEFLOW_") and key not in ("COLUMNS", "LINES")
    }
    path = [str(ACCEPTANCE_DIR)]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(path)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class Completed:
    """A CLI command that ran to its end."""

    returncode: int
    stdout: str
    stderr: str


class ChildProcess:
    """A running ``durableflow`` process whose stdout and stderr go to files."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], stdout: Path, stderr: Path):
        self.name = name
        self.popen = popen
        self.stdout_path = stdout
        self.stderr_path = stderr

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        """Everything the process printed, for assertion messages."""
        return (
            f"--- {self.name} (pid {self.pid}, returncode {self.returncode}) stdout ---\n"
            f"{self.stdout()[-4000:]}\n--- {self.name} stderr ---\n{self.stderr()[-6000:]}"
        )

    def send(self, signum: int) -> None:
        self.popen.send_signal(signum)

    async def wait_exit(self, timeout: float) -> int:
        """Wait (without blocking the event loop) for the process to exit."""
        deadline = time.monotonic() + timeout
        while (code := self.popen.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} did not exit within {timeout}s\n{self.describe()}"
                )
            await asyncio.sleep(0.02)
        return code

    async def wait_for_output(self, text: str, timeout: float, *, stream: str = "stderr") -> None:
        """Wait until ``text`` appears in the process's stdout or stderr."""
        read = self.stderr if stream == "stderr" else self.stdout
        deadline = time.monotonic() + timeout
        while text not in read():
            if self.popen.poll() is not None and text not in read():
                raise AssertionError(
                    f"{self.name} exited before printing {text!r}\n{self.describe()}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} did not print {text!r} within {timeout}s\n{self.describe()}"
                )
            await asyncio.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL (works on a SIGSTOPped process too) and reap."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


class Processes:
    """Starts ``durableflow`` processes for one test and kills the leftovers after it."""

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._children: list[ChildProcess] = []
        self._terminals: list[Terminal] = []

    def start(
        self,
        name: str,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        module: str = "durableflow.cli",
    ) -> ChildProcess:
        """Start ``python -m <module> <args>`` (the CLI by default) in the background."""
        stdout = self._directory / f"{name}.stdout"
        stderr = self._directory / f"{name}.stderr"
        with stdout.open("wb") as out, stderr.open("wb") as err:
            popen = subprocess.Popen(
                [sys.executable, "-m", module, *args],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=child_environment(env),
                cwd=self._directory,
            )
        child = ChildProcess(name, popen, stdout, stderr)
        self._children.append(child)
        return child

    def worker(self, name: str, app: str, env: Mapping[str, str], *extra_args: str) -> ChildProcess:
        """Start ``durableflow worker <app>`` (default INFO logging on stderr)."""
        return self.start(name, ["worker", app, *extra_args], env)

    async def run(
        self, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> Completed:
        """Run ``durableflow <args>`` to its end and return its exit code and output."""
        name = f"cli-{len(self._children)}"
        child = self.start(name, args, env)
        await child.wait_exit(timeout)
        assert child.returncode is not None
        return Completed(child.returncode, child.stdout(), child.stderr())

    async def run_on_terminal(
        self, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 60.0
    ) -> Completed:
        """Run ``durableflow <args>`` on a pseudo-terminal (stdout and stderr), as a person
        at a terminal would (160 columns); ``stdout`` is everything the terminal received."""
        child, terminal = self._start_on_terminal(args, env)
        received = bytearray()
        deadline = time.monotonic() + timeout
        try:
            while True:
                exited = child.returncode is not None  # before the read: then it read all
                try:
                    chunk = os.read(terminal, 65536)
                except BlockingIOError:
                    if exited:
                        break
                    if time.monotonic() > deadline:
                        raise AssertionError(f"{child.name} did not exit in {timeout}s") from None
                    await asyncio.sleep(0.02)
                    continue
                except OSError:  # EIO: the terminal's other end is closed, all was read
                    break
                if not chunk:
                    break
                received.extend(chunk)
        finally:
            os.close(terminal)
            child.stdout_path.write_bytes(bytes(received))
        code = await child.wait_exit(10)
        return Completed(code, child.stdout(), child.stderr())

    def start_on_terminal(
        self, args: Sequence[str], env: Mapping[str, str] | None = None
    ) -> Terminal:
        """Start ``durableflow <args>`` in the foreground of its own pseudo-terminal, as a
        person types it at a shell: stdin, stdout and stderr are the terminal, which is
        the process's controlling terminal, so Ctrl-C typed on it (``Terminal.press``)
        reaches the process as SIGINT through the terminal, not from us."""
        child, terminal = self._start_on_terminal(args, env, interactive=True)
        session = Terminal(child, terminal)
        self._terminals.append(session)
        return session

    def _start_on_terminal(
        self, args: Sequence[str], env: Mapping[str, str] | None, *, interactive: bool = False
    ) -> tuple[ChildProcess, int]:
        """The process, and our end of its terminal (non-blocking).

        ``interactive``: the terminal is also its stdin and its controlling terminal (a
        session of its own, so its process group is the terminal's foreground group).
        """
        import fcntl
        import pty
        import struct
        import termios

        name = f"tty-{len(self._children)}"
        transcript = self._directory / f"{name}.stdout"  # written once it exited
        nothing = self._directory / f"{name}.stderr"  # stderr goes to the terminal too
        nothing.touch()
        terminal, device = pty.openpty()
        fcntl.ioctl(device, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        os.set_blocking(terminal, False)

        def take_the_terminal() -> None:
            # In the child, after setsid() (start_new_session), with fd 0 the device:
            # Popen has no option for a controlling terminal, so preexec_fn it is. A
            # shell runs a foreground command with SIGINT at its default even where the
            # test runner itself ignores it (started in the background, say).
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        try:
            popen = subprocess.Popen(
                [sys.executable, "-m", "durableflow.cli", *args],
                stdout=device,
                stderr=device,
                stdin=device if interactive else subprocess.DEVNULL,
                start_new_session=interactive,
                preexec_fn=take_the_terminal if interactive else None,
                env=child_environment({"TERM": "xterm-256color", **(env or {})}),
                cwd=self._directory,
            )
        finally:
            os.close(device)  # the child has its own copy
        child = ChildProcess(name, popen, transcript, nothing)
        self._children.append(child)
        return child, terminal

    def kill_all(self) -> None:
        for child in self._children:
            child.kill()
        for terminal in self._terminals:
            terminal.close()


class Terminal:
    """Our end of a pseudo-terminal a ``durableflow`` process runs on (see
    ``Processes.start_on_terminal``): what it has shown so far, and keys typed on it."""

    def __init__(self, child: ChildProcess, terminal: int) -> None:
        self.child = child
        self._terminal = terminal
        self._received = bytearray()
        self._closed = False

    def received(self) -> str:
        """Everything the terminal received so far, escape sequences included."""
        while not self._closed:
            try:
                chunk = os.read(self._terminal, 65536)
            except BlockingIOError:
                break
            except OSError:  # EIO: the process exited and closed its end
                self._closed = True
                break
            if not chunk:
                self._closed = True
                break
            self._received.extend(chunk)
        return self._received.decode(errors="replace")

    def screen(self) -> str:
        """``received()`` without colours and cursor movements."""
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", self.received())

    async def wait_for(self, text: str, timeout: float) -> None:
        """Wait until ``text`` is on the screen."""
        deadline = time.monotonic() + timeout
        while text not in self.screen():
            if self.child.returncode is not None and text not in self.screen():
                raise AssertionError(
                    f"{self.child.name} exited before showing {text!r}\n{self.screen()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.child.name} did not show {text!r} within "
                    f"{timeout}s\n{self.screen()[-4000:]}"
                )
            await asyncio.sleep(0.02)

    def press(self, keys: bytes) -> None:
        """Type ``keys`` on the terminal (``b"\\x03"`` is Ctrl-C)."""
        os.write(self._terminal, keys)

    def attributes(self) -> list[object]:
        """The terminal's modes (``termios.tcgetattr``): echo, canonical input..."""
        import termios

        return termios.tcgetattr(self._terminal)

    async def wait_exit(self, timeout: float) -> int:
        """Wait for the process to exit, reading what it still shows meanwhile (a full
        terminal would block it); the transcript is kept as the process's stdout file."""
        deadline = time.monotonic() + timeout
        try:
            while (code := self.child.returncode) is None:
                self.received()
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"{self.child.name} did not exit within {timeout}s\n{self.screen()[-4000:]}"
                    )
                await asyncio.sleep(0.02)
        finally:
            self.received()
            self.child.stdout_path.write_bytes(bytes(self._received))
        return code

    def close(self) -> None:
        """Close our end (once; ``Processes.kill_all`` does it after the test)."""
        if self._terminal >= 0:
            os.close(self._terminal)
            self._terminal = -1


async def wait_until(
    predicate_sql: str,
    connection: asyncpg.Connection,
    *args: object,
    timeout: float,
    interval: float = 0.02,
    message: str = "",
) -> None:
    """Poll ``predicate_sql`` (a query returning one boolean) until it is true."""
    deadline = time.monotonic() + timeout
    while not await connection.fetchval(predicate_sql, *args):
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for: {message or predicate_sql}"
            )
        await asyncio.sleep(interval)
