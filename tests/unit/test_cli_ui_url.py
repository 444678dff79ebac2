"""``durableflow ui`` prints an address a browser can open, whatever ``--host`` was."""

from __future__ import annotations

import pytest

from durableflow.cli.ui_cmd import browser_url, shown_host


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8080/"),
        ("192.168.1.20", "http://192.168.1.20:8080/"),
        ("localhost", "http://localhost:8080/"),
        ("ui.example.com", "http://ui.example.com:8080/"),
        # Every address: no address to connect to, so this machine's loopback.
        ("0.0.0.0", "http://127.0.0.1:8080/"),
        ("::", "http://[::1]:8080/"),
        ("0:0:0:0:0:0:0:0", "http://[::1]:8080/"),
        # IPv6 in brackets, as typed (it printed http://::1:8080/ once).
        ("::1", "http://[::1]:8080/"),
        ("2001:db8::5", "http://[2001:db8::5]:8080/"),
        ("::ffff:10.0.0.1", "http://[::ffff:10.0.0.1]:8080/"),
        ("fe80::1%eth0", "http://[fe80::1%25eth0]:8080/"),  # a zone, as URLs write it
    ],
)
def test_browser_url(host: str, url: str) -> None:
    assert browser_url(host, 8080) == url


@pytest.mark.parametrize(
    ("host", "shown"),
    [
        ("0.0.0.0", "0.0.0.0"),  # the warning says where it binds, not where to browse
        ("10.1.2.3", "10.1.2.3"),
        ("ui.example.com", "ui.example.com"),
        ("::", "[::]"),
        ("2001:db8::5", "[2001:db8::5]"),
    ],
)
def test_bind_address_in_the_warning(host: str, shown: str) -> None:
    assert shown_host(host) == shown
