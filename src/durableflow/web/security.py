"""Who may act in the UI: the token, the login cookie, CSRF tokens, same-origin checks.

- No token configured: the UI is read-only; every action is refused (403).
- With a token: an action is allowed for a request that carries it
  (``Authorization: Bearer <token>`` or ``X-DurableFlow-Token``), or that has the login
  cookie *and* the form's CSRF token. Browsers do not send custom headers across
  origins without asking, so header-authenticated requests need no CSRF token.
- The login cookie is ``<nonce>.<hmac(token, nonce)>``: HttpOnly, SameSite=Strict,
  nothing stored on the server; changing the token logs everyone out. The CSRF token is
  ``hmac(token, "csrf:" + nonce)``, so it is bound to the login.
- A request whose ``Origin`` names another site is refused, whatever it carries.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from starlette.requests import Request

COOKIE = "durableflow_session"
TOKEN_HEADER = "x-durableflow-token"  # noqa: S105 - a header name
CSRF_FIELD = "csrf_token"


def _sign(token: str, message: str) -> str:
    return hmac.new(token.encode(), message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Access:
    """What one request may do, and the CSRF token its forms must carry."""

    actions_enabled: bool  # a token is configured at all
    authorized: bool  # this request proved it has the token
    via_header: bool  # ...by a header (no CSRF token needed)
    csrf_token: str | None  # for forms, when authorized by the cookie


class Guard:
    """Decides access for requests, given the configured token (or None: read-only)."""

    def __init__(self, token: str | None) -> None:
        self.token = token or None

    def new_session_cookie(self) -> str:
        assert self.token is not None
        nonce = secrets.token_urlsafe(18)
        return f"{nonce}.{_sign(self.token, 'session:' + nonce)}"

    def _session_nonce(self, request: Request) -> str | None:
        if self.token is None:
            return None
        value = request.cookies.get(COOKIE, "")
        nonce, _, signature = value.partition(".")
        if not nonce or not hmac.compare_digest(signature, _sign(self.token, "session:" + nonce)):
            return None
        return nonce

    def token_matches(self, presented: str | None) -> bool:
        if self.token is None or not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.token.encode())

    def access(self, request: Request) -> Access:
        if self.token is None:
            return Access(False, False, False, None)
        authorization = request.headers.get("authorization", "")
        bearer = authorization[7:] if authorization.lower().startswith("bearer ") else None
        if self.token_matches(bearer) or self.token_matches(request.headers.get(TOKEN_HEADER)):
            return Access(True, True, True, None)
        nonce = self._session_nonce(request)
        if nonce is None:
            return Access(True, False, False, None)
        return Access(True, True, False, _sign(self.token, "csrf:" + nonce))

    @staticmethod
    def same_origin(request: Request) -> bool:
        """False when the browser says the request comes from another site."""
        origin = request.headers.get("origin")
        if origin is not None and origin != "null":
            host = request.headers.get("host", "")
            scheme_and_host = origin.split("://", 1)[-1]
            if scheme_and_host != host:
                return False
        # Sec-Fetch-Site is sent by current browsers on every request.
        return request.headers.get("sec-fetch-site", "same-origin") in (
            "same-origin",
            "none",
        )

    @staticmethod
    def csrf_valid(access: Access, presented: str | None) -> bool:
        if access.via_header:
            return True
        if access.csrf_token is None or not presented:
            return False
        return hmac.compare_digest(presented.encode(), access.csrf_token.encode())


# Every page: scripts only from the UI itself (the vendored Mermaid included), no
# framing, no plugins. Inline styles are allowed: Mermaid styles the SVG it draws.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)

SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}
