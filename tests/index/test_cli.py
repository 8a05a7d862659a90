"""`tiergate index ...` end to end with the real model on a small corpus."""

import json

import pytest
from conftest import write_jsonl
from typer.testing import CliRunner

from tiergate.index.cli import app

pytestmark = pytest.mark.slow


def test_cli_build_search_info_list_delete(tmp_path):
    cfg = tmp_path / "tiergate.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'var'}\n")
    records = [{"id": f"a{i}", "text": t, "metadata": {"kind": "fruit" if i < 3 else "tool"}} for i, t in enumerate(
        ["Apples are sweet red fruits.", "Bananas are long yellow fruits.", "Cherries are small dark red fruits.",
         "A hammer drives nails into wood.", "A saw cuts planks of wood.", "A wrench turns bolts and nuts."])]
    src = write_jsonl(tmp_path / "docs.jsonl", records)
    run = CliRunner().invoke
    r = run(app, ["build", str(src), "--name", "docs", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    assert "built docs: 6 passages" in r.output
    r = run(app, ["search", "docs", "tool for nails", "-k", "2", "--json", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["query"] == "tool for nails" and out["results"][0]["id"] == "a3"
    assert set(out["results"][0]) == {"id", "score", "text", "metadata"}
    queries = tmp_path / "q.txt"
    queries.write_text("yellow fruit\n\nsomething to cut wood\n")
    r = run(app, ["search", "docs", "--queries", str(queries), "-k", "1", "--json", "--filter", "kind=tool",
                  "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.strip().splitlines()]
    assert [x["query"] for x in lines] == ["yellow fruit", "something to cut wood"]
    assert all(x["results"][0]["metadata"]["kind"] == "tool" for x in lines)
    assert lines[1]["results"][0]["id"] == "a4"
    r = run(app, ["info", "docs", "--json", "--config", str(cfg)])
    info = json.loads(r.stdout)
    assert info["passages"] == 6 and info["raw_text_bytes"] == sum(len(x["text"].encode()) for x in records)
    assert info["index_bytes"] > 0 and "text-00000.parquet" in info["files"]
    r = run(app, ["list", "--config", str(cfg)])
    assert "default/docs" in r.output
    r = run(app, ["info", "nope", "--config", str(cfg)])
    assert r.exit_code == 2 and "not found" in r.output
    r = run(app, ["build", str(tmp_path / "missing.jsonl"), "--name", "x", "--config", str(cfg)])
    assert r.exit_code == 2 and "source not found" in r.output
    r = run(app, ["delete", "docs", "--config", str(cfg)])
    assert r.exit_code == 0 and "deleted default/docs" in r.output
    assert run(app, ["list", "--config", str(cfg)]).output.strip() == ""
