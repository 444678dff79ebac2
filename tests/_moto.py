"""moto's S3 server for the tests: one per session, on a free loopback port.

Shared by the storage and artefact integration tests (their conftests wrap it in a
session fixture) and by the artefacts benchmark. No Docker, no network.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

BUCKET = "durableflow-tests"
REGION = "us-east-1"
ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"


@contextmanager
def moto_server(bucket: str = BUCKET) -> Iterator[str]:
    """Start moto's S3 server with ``bucket`` created; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    # moto logs every request through werkzeug; thousands of lines would drown failures.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
        yield endpoint
    finally:
        server.stop()
