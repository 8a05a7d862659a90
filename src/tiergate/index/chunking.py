"""Token-aware chunking with overlap and stable ids.

chunk_tokens = 0 keeps one record as one passage with the record's id. Otherwise a record is cut
into windows of chunk_tokens tokens (of the embedder's tokenizer) stepping chunk_tokens - overlap,
and chunk i gets the id "<record id>#<i>": the same record always gives the same ids.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from tiergate.errors import InvalidRequestError
from tiergate.index.sources import Record


@dataclass
class Chunk:
    id: str
    record_id: str
    text: str
    metadata: dict[str, Any]


def check_params(chunk_tokens: int, overlap: int) -> None:
    if chunk_tokens < 0:
        raise InvalidRequestError("chunk_tokens must be >= 0", param="chunk_tokens")
    if overlap < 0 or (chunk_tokens and overlap >= chunk_tokens):
        raise InvalidRequestError("overlap must be >= 0 and smaller than chunk_tokens", param="overlap")


def chunk_record(rec: Record, tokenizer: Any, chunk_tokens: int, overlap: int) -> list[Chunk]:
    if chunk_tokens == 0:
        return [Chunk(rec.id, rec.id, rec.text, rec.metadata)]
    enc = tokenizer(rec.text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    if not offsets:
        return [Chunk(f"{rec.id}#0", rec.id, rec.text, rec.metadata)]
    step = chunk_tokens - overlap
    chunks = []
    for i, start in enumerate(range(0, max(1, len(offsets) - overlap), step)):
        window = offsets[start : start + chunk_tokens]
        a, b = window[0][0], window[-1][1]
        # Cover the whole record: leading text before the first token and trailing after the last.
        if start == 0:
            a = 0
        if start + chunk_tokens >= len(offsets):
            b = len(rec.text)
        text = rec.text[a:b].strip()
        if text:
            chunks.append(Chunk(f"{rec.id}#{i}", rec.id, text, rec.metadata))
        if start + chunk_tokens >= len(offsets):
            break
    return chunks


def chunk_records(records: Iterable[Record], tokenizer: Any, chunk_tokens: int, overlap: int) -> Iterator[Chunk]:
    check_params(chunk_tokens, overlap)
    for rec in records:
        yield from chunk_record(rec, tokenizer, chunk_tokens, overlap)
