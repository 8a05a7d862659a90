"""A low-storage graph ANN index: pruned graph + PQ codes on disk, exact re-scoring at query time.

    from tiergate.index import build_index, open_index
    build_index(settings, "docs", ["corpus.jsonl"], progress=True)
    hits = open_index(settings, "docs").search("what is a hub node?", k=5)
"""

from tiergate.index.build import BuildParams, ProgressFn, build_index, build_structures
from tiergate.index.errors import (
    BuildCancelled,
    CorruptIndexError,
    IndexExistsError,
    IndexNotFoundError,
    SourceError,
)
from tiergate.index.graph import GraphParams
from tiergate.index.search import SearchParams
from tiergate.index.sources import Record
from tiergate.index.store import Hit, Index, IndexInfo, delete_index, index_info, list_indexes, open_index
from tiergate.index.updates import UpdateResult, delete_documents, insert_documents

__all__ = [
    "BuildCancelled",
    "BuildParams",
    "CorruptIndexError",
    "GraphParams",
    "Hit",
    "Index",
    "IndexExistsError",
    "IndexInfo",
    "IndexNotFoundError",
    "ProgressFn",
    "Record",
    "SearchParams",
    "SourceError",
    "UpdateResult",
    "build_index",
    "build_structures",
    "delete_documents",
    "delete_index",
    "index_info",
    "insert_documents",
    "list_indexes",
    "open_index",
]
