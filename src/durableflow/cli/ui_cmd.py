"""``durableflow ui``: serve the web UI (the ``ui`` extra) for one database."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import signal
from collections.abc import Iterator
from types import FrameType
from typing import Any

from durableflow.cli.common import EXIT_INTERRUPTED, EXIT_OK, add_connection_options, make_flow
from durableflow.errors import ConfigurationError

logger = logging.getLogger("durableflow.cli")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ui",
        help="serve the web UI",
        description="Serve the web UI: runs (live), run details, workers. Read-only unless "
        "DURABLEFLOW_UI_TOKEN is set; actions then need that token.",
    )
    add_connection_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.set_defaults(func=ui_command)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def shown_host(host: str) -> str:
    """``host`` as it is written before ``:port``: an IPv6 address in brackets."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a host name
        return host
    return f"[{host}]" if address.version == 6 else host


def browser_url(host: str, port: int) -> str:
    """The address to open in a browser on this machine for a server bound to ``host``.

    ``0.0.0.0`` and ``::`` mean "every address" to ``bind`` but are no address to
    connect to, so their loopback is given instead (``127.0.0.1``, ``[::1]``): a
    server bound there answers on it too. An IPv6 address goes in brackets, its zone
    (``fe80::1%eth0``) written ``%25eth0`` as URLs write it (RFC 6874).
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a host name
        return f"http://{host}:{port}/"
    if address.is_unspecified:
        host = "::1" if address.version == 6 else "127.0.0.1"
    return f"http://{shown_host(host).replace('%', '%25')}:{port}/"


def _server(config: Any) -> Any:
    """A uvicorn server that stops on SIGTERM or Ctrl-C and then returns.

    uvicorn raises the signal again once it has shut down, and SIGTERM's default action
    then ends the process before the Flow's connections are closed. This one only
    remembers the signal (``stopped_by``): the command closes the Flow and exits 0 on
    SIGTERM, as ``durableflow worker`` does, and 130 on Ctrl-C, as other commands do.
    """
    import uvicorn

    class Server(uvicorn.Server):
        stopped_by: int | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            self.stopped_by = self.stopped_by or sig
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            stops = (signal.SIGINT, signal.SIGTERM)
            original = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server(config)


async def ui_command(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError as exc:
        raise ConfigurationError(
            "the web UI needs the 'ui' extra: pip install 'durableflow[ui]'"
        ) from exc
    flow = make_flow(args)
    app = flow.admin_app()
    if not _is_loopback(args.host):
        logger.warning(
            "serving the UI on %s: anyone who reaches it can read every run's input and output%s",
            shown_host(args.host),
            "" if os.environ.get("DURABLEFLOW_UI_TOKEN") else " (actions stay disabled)",
            extra={"event": "ui_exposed"},
        )
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = _server(config)
    print(f"durableflow UI on {browser_url(args.host, args.port)} (Ctrl-C stops it)", flush=True)
    try:
        await server.serve()
    finally:
        await flow.close()
    return EXIT_INTERRUPTED if server.stopped_by == signal.SIGINT else EXIT_OK
