"""``durableflow ui``: serve the web UI (the ``ui`` extra) for one database."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
from typing import Any

from durableflow.cli.common import EXIT_OK, add_connection_options, make_flow
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


def _url(host: str, port: int) -> str:
    """The UI's address as a browser takes it: an IPv6 address goes in brackets."""
    try:
        bracketed = ipaddress.ip_address(host).version == 6
    except ValueError:  # a host name
        bracketed = False
    return f"http://[{host}]:{port}/" if bracketed else f"http://{host}:{port}/"


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
            args.host,
            "" if os.environ.get("DURABLEFLOW_UI_TOKEN") else " (actions stay disabled)",
            extra={"event": "ui_exposed"},
        )
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    print(f"durableflow UI on {_url(args.host, args.port)} (Ctrl-C stops it)", flush=True)
    try:
        await server.serve()
    finally:
        await flow.close()
    return EXIT_OK
