"""``durableflow ui`` as a process, on loopback and on every address, and the global
logging options (``-v``, ``--log-format``) of the operator commands: log records go to
stderr, and ``--json`` output on stdout stays one parseable document."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import signal
import socket
from typing import Any

import psutil
import pytest
from apps.ops_cli import APP, Cli

pytestmark = [pytest.mark.acceptance, pytest.mark.timeout(180)]


def free_port() -> int:
    """A TCP port nobody listens on, on any address."""
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", 0))  # free on every address, not just on loopback
        port: int = probe.getsockname()[1]
        return port


def non_loopback_address() -> str | None:
    """An IPv4 address of this machine on an interface that is up, other than loopback."""
    up = {name for name, stats in psutil.net_if_stats().items() if stats.isup}
    for name, addresses in psutil.net_if_addrs().items():
        for address in addresses:
            if (
                name in up
                and address.family == socket.AF_INET
                and not ipaddress.ip_address(address.address).is_loopback
            ):
                return str(address.address)
    return None


async def http_get(host: str, port: int, path: str, *, host_header: str | None = None) -> str:
    """The raw HTTP/1.1 response to ``GET path`` (waiting up to 5 s for the server)."""
    for _ in range(100):
        try:
            reader, writer = await asyncio.open_connection(host, port)
            break
        except OSError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError(f"nothing answers on {host}:{port}")
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # IPv6 in brackets
    authority = host_header or authority
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n".encode())
    response = (await reader.read()).decode()
    writer.close()
    return response


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.parametrize(
    ("host", "url_host"),
    [
        (None, "127.0.0.1"),  # the default
        pytest.param(
            "::1",
            "[::1]",  # printed as a browser takes it (it printed http://::1:8080/)
            marks=pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here"),
        ),
    ],
)
async def test_ui_command_serves_on_loopback(cli: Cli, host: str | None, url_host: str) -> None:
    port = free_port()
    bind = ["--host", host] if host else []
    ui = cli.processes.start("ui", ["ui", "-a", APP, *bind, "--port", str(port)], cli.env)
    await ui.wait_for_output(f"http://{url_host}:{port}/", timeout=30, stream="stdout")
    response = await http_get(host or "127.0.0.1", port, "/workers")
    assert response.startswith("HTTP/1.1 200"), response[:200]
    assert "<h1>Workers</h1>" in response and "read-only" in response
    assert "ui_exposed" not in ui.stderr(), ui.describe()  # loopback: nothing to warn about
    if (address := non_loopback_address()) is not None:  # bound to loopback only
        with pytest.raises(OSError):
            await asyncio.open_connection(address, port)
    ui.send(signal.SIGINT)
    assert await ui.wait_exit(20) == 130, ui.describe()  # docs/cli.md: Ctrl-C exits 130


async def test_ui_command_on_loopback_answers_only_loopback_host_names(cli: Cli) -> None:
    """DNS rebinding: a page on attacker.example whose name was made to resolve to
    127.0.0.1 reaches the loopback UI with ``Host: attacker.example``; reading needs no
    token, so such a request is refused. The names a browser here uses are answered."""
    port = free_port()
    ui = cli.processes.start("ui", ["ui", "-a", APP, "--port", str(port)], cli.env)
    await ui.wait_for_output(f"http://127.0.0.1:{port}/", timeout=30, stream="stdout")
    for name in ("127.0.0.1", "localhost", "LOCALHOST"):
        response = await http_get("127.0.0.1", port, "/workers", host_header=f"{name}:{port}")
        assert response.startswith("HTTP/1.1 200"), (name, response[:200])
    for name in ("attacker.example", "127.0.0.1.attacker.example", "10.0.0.1"):
        response = await http_get("127.0.0.1", port, "/workers", host_header=f"{name}:{port}")
        assert response.startswith("HTTP/1.1 400"), (name, response[:200])
        assert "Workers" not in response
    ui.send(signal.SIGINT)
    assert await ui.wait_exit(20) == 130, ui.describe()


async def test_ui_command_on_every_address_warns_and_serves_there(cli: Cli) -> None:
    """``ui --host 0.0.0.0``: the ui_exposed warning docs/ui.md promises, an address a
    browser can open printed (loopback: 0.0.0.0 is none), the pages on this machine's
    other address (or loopback, when it has none), stopped by its pid."""
    port = free_port()
    ui = cli.processes.start(
        "ui", ["ui", "-a", APP, "--host", "0.0.0.0", "--port", str(port)], cli.env
    )
    await ui.wait_for_output(f"http://127.0.0.1:{port}/", timeout=30, stream="stdout")
    # Logged before the address is printed, on stderr: stdout has the address alone.
    [warning] = [line for line in ui.stderr().splitlines() if "ui_exposed" in line]
    assert warning.endswith(
        " WARNING durableflow.cli: serving the UI on 0.0.0.0: anyone who reaches it can read "
        "every run's input and output (actions stay disabled) [event=ui_exposed]"
    ), warning
    assert ui.stdout().splitlines() == [
        f"durableflow UI on http://127.0.0.1:{port}/ (Ctrl-C stops it)"
    ]

    address = non_loopback_address() or "127.0.0.1"
    response = await http_get(address, port, "/workers")
    assert response.startswith("HTTP/1.1 200"), response[:200]
    assert "<h1>Workers</h1>" in response and "read-only" in response
    if address != "127.0.0.1":
        assert (await http_get("127.0.0.1", port, "/workers")).startswith("HTTP/1.1 200")

    ui.send(signal.SIGINT)  # by its pid, as Ctrl-C would
    assert await ui.wait_exit(20) == 130, ui.describe()
    assert "Traceback" not in ui.stderr(), ui.describe()
    with pytest.raises(ConnectionRefusedError):  # the port was closed with it
        await asyncio.open_connection(address, port)


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
async def test_ui_command_on_every_ipv6_address_prints_the_ipv6_loopback(cli: Cli) -> None:
    """``ui --host ::``: the address printed is ``[::1]``, which answers, and the warning
    writes the bound address in brackets."""
    port = free_port()
    ui = cli.processes.start("ui", ["ui", "-a", APP, "--host", "::", "--port", str(port)], cli.env)
    await ui.wait_for_output(f"http://[::1]:{port}/", timeout=30, stream="stdout")
    [warning] = [line for line in ui.stderr().splitlines() if "ui_exposed" in line]
    assert " serving the UI on [::]: anyone who reaches it" in warning, warning
    assert ui.stdout().splitlines() == [f"durableflow UI on http://[::1]:{port}/ (Ctrl-C stops it)"]
    response = await http_get("::1", port, "/workers")
    assert response.startswith("HTTP/1.1 200"), response[:200]
    ui.send(signal.SIGINT)
    assert await ui.wait_exit(20) == 130, ui.describe()


async def test_ui_command_stopped_by_sigterm_closes_and_exits_0(cli: Cli) -> None:
    """SIGTERM (how a service manager stops it) ends the UI as it ends a worker: it stops
    serving, closes its connections and exits 0 (uvicorn alone re-raised the signal,
    and the process died of it before the Flow was closed)."""
    port = free_port()
    ui = cli.processes.start("ui", ["ui", "-a", APP, "--port", str(port)], cli.env)
    await ui.wait_for_output(f"http://127.0.0.1:{port}/", timeout=30, stream="stdout")
    assert (await http_get("127.0.0.1", port, "/workers")).startswith("HTTP/1.1 200")
    ui.send(signal.SIGTERM)
    assert await ui.wait_exit(20) == 0, ui.describe()
    assert "Traceback" not in ui.stderr(), ui.describe()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)


def json_log_records(stderr: str) -> list[dict[str, Any]]:
    """The log records of a ``--log-format json`` process: every stderr line is one."""
    records = [json.loads(line) for line in stderr.splitlines()]
    for record in records:
        assert {"time", "level", "logger", "message", "event", "run_id"} <= record.keys(), record
    return records


async def test_global_log_options_log_on_stderr_and_leave_json_output_parseable(cli: Cli) -> None:
    """``-v``/``--verbose`` and ``--log-format`` go before the command (docs/cli.md): the
    records go to stderr, JSON objects with ``--log-format json``, DEBUG ones with
    ``-v``, and ``--json`` output on stdout stays one parseable document."""
    worker = cli.worker("worker")
    loud = ["-v", "--log-format", "json"]
    started = await cli.run(
        *loud, "runs", "start", "ops.greet", "-a", APP, "--input", '"logs"', "--wait", "--json"
    )
    assert started.returncode == 0, started
    run_id = json.loads(started.stdout)["run_id"]
    listing, shown, steps, workers, quiet, text = await asyncio.gather(
        cli.run(*loud, "runs", "list", "--json"),
        cli.run(*loud, "runs", "show", run_id, "--json"),
        cli.run(*loud, "runs", "steps", run_id, "--json"),
        cli.run("--verbose", "--log-format", "json", "workers", "list", "--json"),
        cli.run("--log-format", "json", "runs", "show", run_id, "--json"),
        cli.run("-v", "runs", "show", run_id, "--json"),
    )
    for result in (started, listing, shown, steps, workers, quiet, text):
        assert result.returncode == 0, result
    assert [run["id"] for run in json.loads(listing.stdout)["runs"]] == [run_id]
    assert json.loads(shown.stdout)["run"]["output"] == "hello logs"
    assert json.loads(quiet.stdout) == json.loads(text.stdout) == json.loads(shown.stdout)
    assert [step["name"] for step in json.loads(steps.stdout)] == ["greet_step"]
    assert [w["pid"] for w in json.loads(workers.stdout) if w["alive"]] == [worker.pid]
    # -v: DEBUG records (these commands log none of durableflow's own at DEBUG, but
    # every library's go through, asyncio's event loop choice first); without it none.
    for result in (started, listing, shown, steps, workers):
        assert "DEBUG" in {r["level"] for r in json_log_records(result.stderr)}, result
    assert all(r["level"] != "DEBUG" for r in json_log_records(quiet.stderr)), quiet
    assert re.search(r"^\S+ \S+ DEBUG asyncio: ", text.stderr, re.M), text  # text lines

    # A command that logs its work: runs prune, one run_pruned record per run.
    pruned = await cli.run("--log-format", "json", "runs", "prune", run_id, "--json")
    assert pruned.returncode == 0, pruned
    assert json.loads(pruned.stdout)["runs"] == 1
    [record] = json_log_records(pruned.stderr)
    assert (record["level"], record["logger"], record["event"], record["run_id"]) == (
        "INFO",
        "durableflow.artefacts",
        "run_pruned",
        run_id,
    )
    # ...and ui on a non-loopback address, with a token: actions are not disabled then.
    port = free_port()
    ui = cli.processes.start(
        "ui-json",
        ["--log-format", "json", "ui", "-a", APP, "--host", "0.0.0.0", "--port", str(port)],
        {**cli.env, "DURABLEFLOW_UI_TOKEN": "s3cret-token"},
    )
    await ui.wait_for_output(f"http://127.0.0.1:{port}/", timeout=30, stream="stdout")
    [record] = json_log_records(ui.stderr())
    assert (record["level"], record["logger"], record["event"]) == (
        "WARNING",
        "durableflow.cli",
        "ui_exposed",
    )
    assert record["message"] == (
        "serving the UI on 0.0.0.0: anyone who reaches it can read every run's input and output"
    )
    ui.send(signal.SIGINT)
    assert await ui.wait_exit(20) == 130, ui.describe()
    worker.kill()
