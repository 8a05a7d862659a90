"""Signed, expiring session tokens for the dashboard's login cookie (stdlib HMAC, no server state).

The signing key is derived from the admin key, so sessions survive a restart and work on every
replica, and changing the admin key logs everyone out. A token is `<expiry>.<nonce>.<mac>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

COOKIE = "tiergate_session"


class SessionSigner:
    def __init__(self, admin_key: str, ttl_s: float) -> None:
        self._key = hmac.new(admin_key.encode(), b"tiergate dashboard session v1", hashlib.sha256).digest()
        self.ttl_s = ttl_s

    def _mac(self, message: bytes) -> str:
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def issue(self, now: float | None = None) -> str:
        expiry = int((now if now is not None else time.time()) + self.ttl_s)
        body = f"{expiry}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._mac(body.encode())}"

    def valid(self, token: str | None, now: float | None = None) -> bool:
        if not token or token.count(".") != 2:
            return False
        body, _, mac = token.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(body.encode())):
            return False
        expiry = body.split(".", 1)[0]
        return expiry.isdigit() and int(expiry) > (now if now is not None else time.time())

    def csrf(self, token: str) -> str:
        """The token the page echoes in a header on actions: a cross-site form cannot know it."""
        return self._mac(b"csrf:" + token.encode())
