import itertools

import pytest

from tiergate.errors import InvalidRequestError
from tiergate.index.chunking import chunk_record, chunk_records
from tiergate.index.sources import Record

TEXT = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(120))


def test_zero_keeps_record_and_id(tokenizer):
    [c] = chunk_record(Record("r1", TEXT, {"a": 1}), tokenizer, 0, 0)
    assert (c.id, c.record_id, c.text, c.metadata) == ("r1", "r1", TEXT, {"a": 1})


def test_windows_overlap_cover_and_are_stable(tokenizer):
    chunks = chunk_record(Record("doc", TEXT, {}), tokenizer, 64, 16)
    assert [c.id for c in chunks] == [f"doc#{i}" for i in range(len(chunks))]
    assert len(chunks) > 5
    for c in chunks:
        assert len(tokenizer(c.text, add_special_tokens=False)["input_ids"]) <= 64 + 2
    # Consecutive chunks share text (the overlap), and together they cover the record.
    for a, b in itertools.pairwise(chunks):
        assert a.text[-20:] in TEXT and b.text[:10] in a.text
    assert chunks[0].text.startswith("Sentence number 0") and chunks[-1].text.endswith("topic 0.")
    again = chunk_record(Record("doc", TEXT, {}), tokenizer, 64, 16)
    assert [(c.id, c.text) for c in again] == [(c.id, c.text) for c in chunks]


def test_bad_params(tokenizer):
    for tokens, overlap in [(-1, 0), (10, 10), (10, -1)]:
        with pytest.raises(InvalidRequestError):
            list(chunk_records([Record("a", "b", {})], tokenizer, tokens, overlap))
