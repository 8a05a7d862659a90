"""Errors raised by the tiered store.

`tiergate.tiers` imports nothing else from the package, so it has its own small hierarchy; the
service maps `StorageError` to a 503/507-style answer in one place. Every message names the tier
(and, for the disk tier, the path) so an operator can act on it.
"""

from __future__ import annotations


class StorageError(Exception):
    """A tier could not complete an operation."""

    def __init__(self, message: str, *, tier: str, path: str | None = None) -> None:
        super().__init__(message)
        self.tier = tier
        self.path = path


class TierFullError(StorageError):
    """No room: the object exceeds every budget, or the device itself is full (ENOSPC)."""


class TierUnavailableError(StorageError):
    """A remote tier (Redis) is down or too slow; local tiers keep serving."""


class CorruptObjectError(Exception):
    """A stored object failed its checksum or header checks. Readers treat it as a miss."""
