"""API keys -> tenants, and the admin key.

Keys are looked up by their SHA-256 digest, so the lookup's timing depends on the digest, not on
how many leading characters of a guess were right; keys themselves are never logged.
With no API keys configured the gateway runs open on loopback only (the app factory refuses
any other bind address) and every caller is the tenant "default".
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from tiergate.config import AuthConfig
from tiergate.errors import AuthenticationError, PermissionDeniedError

DEFAULT_TENANT = "default"
ADMIN_TENANT = "admin"


@dataclass(frozen=True)
class Principal:
    tenant: str
    is_admin: bool = False
    key_id: str = "anonymous"  # a digest prefix: safe to log and to rate-limit on


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self._tenants = {_digest(k): t for k, t in config.api_keys.items()}
        admin = config.admin_key()
        self._admin = _digest(admin) if admin else None
        self.open = not self._tenants  # no keys: loopback-only development mode

    def authenticate(self, authorization: str | None) -> Principal:
        key = _bearer(authorization)
        if key is None:
            if self.open:
                return Principal(DEFAULT_TENANT, is_admin=self._admin is None)
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        digest = _digest(key)
        key_id = digest.hex()[:12]
        if self._admin is not None and hmac.compare_digest(digest, self._admin):
            return Principal(ADMIN_TENANT, is_admin=True, key_id=key_id)
        tenant = self._tenants.get(digest)
        if tenant is not None:
            return Principal(tenant, key_id=key_id)
        if self.open:
            return Principal(DEFAULT_TENANT, is_admin=self._admin is None)
        raise AuthenticationError("invalid API key")

    def admin(self, authorization: str | None) -> Principal:
        principal = self.authenticate(authorization)
        if principal.is_admin:
            return principal
        if self._admin is None:
            raise PermissionDeniedError("admin routes are disabled: set the admin key (TIERGATE_ADMIN_KEY)")
        raise PermissionDeniedError("this route needs the admin key")


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthenticationError("the Authorization header must be 'Bearer <key>'")
    return value.strip()
