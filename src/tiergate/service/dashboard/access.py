"""Who may see the dashboard: the admin key as a bearer token, or a signed session cookie.

Actions sent with the cookie must also carry the page's CSRF token in a header: a cross-site
page can make the browser send the cookie (SameSite aside) but cannot read the token.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request

from tiergate.errors import AuthenticationError, PermissionDeniedError
from tiergate.service.dashboard.session import COOKIE, SessionSigner

CSRF_HEADER = "x-tiergate-csrf"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Access:
    via: str  # "bearer" | "session" | "open"
    csrf: str = ""


def check(request: Request, signer: SessionSigner | None) -> Access:
    """The caller's access, or AuthenticationError/PermissionDeniedError."""
    auth = request.app.state.services.auth
    header = request.headers.get("authorization")
    if header:
        auth.admin(header)
        return Access("bearer")
    if signer is None:
        # No admin key: the admin API's own rule applies (open on a loopback-only gateway, else refused).
        auth.admin(None)
        _require_csrf(request, "open")
        return Access("open", "open")
    token = request.cookies.get(COOKIE)
    if not signer.valid(token):
        raise AuthenticationError("log in at /admin/login or send 'Authorization: Bearer <admin key>'")
    assert token is not None
    csrf = signer.csrf(token)
    _require_csrf(request, csrf)
    return Access("session", csrf)


def _require_csrf(request: Request, expected: str) -> None:
    if request.method in SAFE_METHODS:
        return
    if not hmac.compare_digest(request.headers.get(CSRF_HEADER, ""), expected):
        raise PermissionDeniedError("missing or wrong CSRF token: reload the dashboard")
