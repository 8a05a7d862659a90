import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tiergate.index.errors import SourceError
from tiergate.index.sources import read_sources


def test_jsonl_csv_parquet_and_folder(tmp_path):
    (tmp_path / "a.jsonl").write_text(
        '{"id": "x1", "text": "hello", "metadata": {"lang": "en"}}\n\n{"text": "no id"}\n'
    )
    (tmp_path / "b.csv").write_text('id,text,source\nc1,"a, quoted text",wiki\n')
    pq.write_table(pa.table({"id": ["p1"], "text": ["from parquet"], "year": [2020]}), tmp_path / "c.parquet")
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "n.md").write_text("# note")
    (folder / "skip.bin").write_bytes(b"\0")
    recs = list(read_sources([tmp_path / "a.jsonl", tmp_path / "b.csv", tmp_path / "c.parquet", folder]))
    assert [r.id for r in recs][:1] == ["x1"] and recs[0].metadata == {"lang": "en"}
    assert len(recs[1].id) == 16  # derived from the text: stable across runs
    assert recs[2].id == "c1" and recs[2].text == "a, quoted text" and recs[2].metadata == {"source": "wiki"}
    assert recs[3].id == "p1" and recs[3].metadata == {"year": 2020}
    assert recs[4].id == "sub/n.md" and recs[4].metadata == {"path": "sub/n.md"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "no records (empty file)"),
        ('{"id": 1, "text": "ok"}\n{"id": 2, "text": "bad"\n', "bad.jsonl:2: invalid JSON"),
        ('{"id": 1, "text": "ok"}\n\n{"id": 3, "body": "x"}\n', "bad.jsonl:3: missing 'text' field"),
        ('{"id": 1, "text": ""}\n', "bad.jsonl:1: 'text' is empty"),
        ('{"id": 1, "text": 5}\n', "'text' must be a string"),
        ('{"id": 1, "text": "a", "metadata": [1]}\n', "'metadata' must be an object"),
        ('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "duplicate id '1'"),
        ("[1, 2]\n", "bad.jsonl:1: expected an object"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(SourceError) as err:
        list(read_sources(path))
    assert message in str(err.value)
    assert err.value.status == 400


def test_other_bad_sources(tmp_path):
    (tmp_path / "no_text.csv").write_text("id,body\n1,x\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "x.xml").write_text("<a/>")
    (tmp_path / "empty_dir").mkdir()
    pq.write_table(pa.table({"id": ["1"], "body": ["x"]}), tmp_path / "nt.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    cases = {
        "no_text.csv": "no_text.csv:1: header has no 'text' column",
        "empty.csv": "no records",
        "x.xml": "unknown source type",
        "empty_dir": "no .txt or .md files",
        "nt.parquet": "no 'text' column",
        "junk.parquet": "not a readable Parquet file",
        "missing.jsonl": "source not found",
    }
    for name, message in cases.items():
        with pytest.raises(SourceError, match=message.replace("(", r"\(").replace(")", r"\)")):
            list(read_sources(tmp_path / name))


def test_records_from_python(tmp_path):
    recs = list(read_sources([[{"id": "a", "text": "t", "metadata": json.dumps({"k": 1})}]]))
    assert recs[0].metadata == {"k": 1}
