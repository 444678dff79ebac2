"""``durableflow ui``: serve the web UI (the ``ui`` extra) for one database."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import signal
import socket
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
    parser.add_argument("--port", type=_port, default=8080, help="port (default 8080)")
    parser.set_defaults(func=ui_command)


def _port(text: str) -> int:
    """A ``--port`` value: a TCP port, 0 (any free one) to 65535; argparse says why not."""
    if not (text.isascii() and text.isdigit() and int(text[:6]) <= 65535):
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 0 to 65535")
    return int(text)


def _listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to ``host``:``port`` as asyncio's ``create_server`` binds them (one per
    address the host resolves to, IPv6 ones IPv6-only), for uvicorn to serve on.

    Bound here rather than by uvicorn, which logs a failed bind and exits 3: an address
    that cannot be bound (taken, not this machine's, a host that does not resolve) is a
    ConfigurationError, one line and exit 2 as for any setting that cannot be used.
    """
    where = f"{shown_host(host)}:{port}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (OSError, UnicodeError, ValueError) as exc:  # UnicodeError: 'not..a..host'
        raise ConfigurationError(f"cannot serve the UI on {where}: {exc}", setting="host") from None
    bound: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(addresses):
            listener = socket.socket(family, kind, protocol)
            bound.append(listener)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            listener.bind(address)
    except OSError as exc:
        for listener in bound:
            listener.close()
        raise ConfigurationError(
            f"cannot serve the UI on {where}: {exc.strerror or exc}", setting="port"
        ) from None
    return bound


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_names(host: str) -> list[str]:
    """The ``Host`` headers a UI bound to the loopback ``host`` answers: the names this
    machine's own browser uses for it. Any other name reached this server by DNS
    rebinding (a page elsewhere whose name was made to resolve to 127.0.0.1), and
    reading the UI needs no token, so those requests are refused."""
    names = {"localhost", "127.0.0.1", "[::1]", shown_host(host).lower()}
    return sorted(names)


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
    listeners = _listen(args.host, args.port)
    flow = make_flow(args)
    app: Any = flow.admin_app()
    if _is_loopback(args.host):
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app = TrustedHostMiddleware(app, allowed_hosts=loopback_names(args.host))
    else:
        logger.warning(
            "serving the UI on %s: anyone who reaches it can read every run's input and output%s",
            shown_host(args.host),
            "" if os.environ.get("DURABLEFLOW_UI_TOKEN") else " (actions stay disabled)",
            extra={"event": "ui_exposed"},
        )
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = _server(config)
    port = listeners[0].getsockname()[1]  # the one chosen, for --port 0
    print(f"durableflow UI on {browser_url(args.host, port)} (Ctrl-C stops it)", flush=True)
    try:
        await server.serve(sockets=listeners)
    finally:
        for listener in listeners:
            listener.close()
        await flow.close()
    return EXIT_INTERRUPTED if server.stopped_by == signal.SIGINT else EXIT_OK
