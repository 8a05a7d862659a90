"""The Ray Data build (chunking + embedding as Ray jobs) gives the same index as the local build."""

import pytest
from conftest import write_jsonl

from tiergate.config import load_settings
from tiergate.index import BuildParams, build_index, open_index

pytestmark = pytest.mark.slow


def test_ray_build_equals_local_build(tmp_path, musique_corpus, real_embedder):
    pytest.importorskip("ray", reason="ray[data] is not installed")
    records, _ = musique_corpus
    # Short records, chunked, so that both jobs do real work in a few seconds.
    recs = [{"id": r["id"], "text": r["text"][:700], "metadata": r["metadata"]} for r in records[:80]]
    src = write_jsonl(tmp_path / "small.jsonl", recs)
    settings = load_settings(data_dir=tmp_path / "var")
    params = BuildParams(chunk_tokens=48, overlap=8)
    build_index(settings, "local", [src], params=params, embedder=real_embedder.inner)
    build_index(settings, "ray", [src], params=params, embedder=real_embedder.inner, ray_address="local")
    a = open_index(settings, "local", embedder=real_embedder)
    b = open_index(settings, "ray", embedder=real_embedder)
    assert a.ids == b.ids and len(a.ids) > len(recs)
    digest = {k: v.sha256 for k, v in a.manifest.files.items()}
    assert digest == {k: v.sha256 for k, v in b.manifest.files.items()}
    assert a.manifest.raw_text_bytes == b.manifest.raw_text_bytes
