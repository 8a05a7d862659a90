"""Index errors: subclasses of the package hierarchy so the service maps them without special cases."""

from __future__ import annotations

from tiergate.errors import InvalidRequestError, NotFoundError, StorageError


class SourceError(InvalidRequestError):
    """A source file is missing, empty or malformed; the message names the file and line."""

    code = "invalid_source"


class IndexNotFoundError(NotFoundError):
    code = "index_not_found"


class IndexExistsError(InvalidRequestError):
    code = "index_exists"


class CorruptIndexError(StorageError):
    """An index file is missing, truncated or fails its checksum.

    409, not 5xx: the gateway itself is healthy and only this index is unusable; its owner can
    delete it and build it again."""

    status = 409
    type = "invalid_request_error"
    code = "index_corrupt"


class BuildCancelled(InvalidRequestError):
    code = "build_cancelled"
