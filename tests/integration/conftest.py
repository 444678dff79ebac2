"""Fixtures shared by the integration folders.

``moto_endpoint``   session: moto's S3 server on a free loopback port with the test
                    bucket created (``tests/_moto.py``); stopped at the end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from _moto import BUCKET, moto_server


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port, with the test bucket created."""
    with moto_server(BUCKET) as endpoint:
        yield endpoint
