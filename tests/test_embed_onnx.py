"""The embedder in ONNX Runtime gives the torch model's vectors, and its exported graph is cached."""

from __future__ import annotations

import numpy as np
import pytest

from tiergate import embed_onnx
from tiergate.cache.encoder import QueryEncoder
from tiergate.config import ModelsConfig
from tiergate.errors import ConfigError
from tiergate.models import Embedder, load_embedder

TEXTS = ["How do I reverse a list in Python?", "x", "  padded  text ", "capital of australia " * 30,
         "What is the boiling point of water at sea level?", "word " * 600]


@pytest.fixture(scope="module")
def torch_embedder():
    return load_embedder(ModelsConfig(device="cpu", embedder_runtime="torch"))


def test_onnx_runtime_gives_the_torch_vectors(torch_embedder, tmp_path) -> None:
    assert torch_embedder.runtime == "torch"
    fast = load_embedder(ModelsConfig(device="cpu"), tmp_path)  # auto = ONNX on CPU
    assert fast.runtime == "onnx" and fast.model_id == torch_embedder.model_id
    reference = torch_embedder.encode(TEXTS)
    for batch_size in (1, 4, 64):  # padded and unpadded batches of mixed lengths
        mine = fast.encode(TEXTS, batch_size=batch_size)
        assert mine.shape == reference.shape and mine.dtype == np.float32
        assert np.min(np.sum(mine * reference, axis=1)) > 0.9999
        assert np.allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)


def test_the_exported_graph_is_reused_and_a_damaged_one_replaced(torch_embedder, tmp_path) -> None:
    model = torch_embedder.model
    embed_onnx.load(model, "minilm", tmp_path, threads=1)
    graph = tmp_path / "minilm.onnx"
    first = graph.stat().st_mtime_ns
    embed_onnx.load(model, "minilm", tmp_path, threads=1)
    assert graph.stat().st_mtime_ns == first  # read back, not exported again

    graph.write_bytes(b"not an onnx graph")
    session = embed_onnx.load(model, "minilm", tmp_path, threads=1)
    assert graph.stat().st_size > 1_000_000  # exported again in place of the damaged file
    features = torch_embedder._fast.arrays(["hello world"])
    vector = session(features)[0]
    assert float(vector @ torch_embedder.encode(["hello world"])[0]) > 0.9999
    assert list(tmp_path.glob(".onnx-*")) == []  # no temp files left behind


def test_onnx_can_be_required() -> None:
    forced = load_embedder(ModelsConfig(device="cpu", embedder_runtime="onnx"))
    assert forced.runtime == "onnx"


def test_the_cache_encoder_keeps_its_own_path_for_a_torch_embedder(torch_embedder) -> None:
    enc = QueryEncoder(torch_embedder)
    assert enc.mode in ("bf16", "direct")
    mine, theirs = enc.encode(TEXTS, batch_size=4), torch_embedder.encode(TEXTS)
    assert np.min(np.sum(mine * theirs, axis=1)) > 0.999


def test_a_model_that_cannot_be_exported_stays_on_torch(torch_embedder, monkeypatch) -> None:
    def fail(model):
        raise RuntimeError("cannot trace this model")

    monkeypatch.setattr(embed_onnx, "export", fail)
    embedder = Embedder(torch_embedder.model, torch_embedder.model_id)
    assert embedder.use_onnx() is False and embedder.runtime == "torch"
    assert np.allclose(embedder.encode(TEXTS[:2]), torch_embedder.encode(TEXTS[:2]), atol=1e-5)
    with pytest.raises(ConfigError, match="embedder_runtime"):
        load_embedder(ModelsConfig(device="cpu", embedder_runtime="onnx"))


def test_an_unwritable_cache_folder_only_costs_the_cache(torch_embedder, tmp_path) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    embedder = Embedder(torch_embedder.model, torch_embedder.model_id)
    assert embedder.use_onnx(blocked / "models") is True and embedder.runtime == "onnx"
    assert blocked.read_text() == "a file where the cache folder should be"


def test_the_cache_encoder_in_int8_stays_close_to_the_embedder_and_keeps_its_graph(tmp_path) -> None:
    fast = load_embedder(ModelsConfig(device="cpu"), tmp_path)
    enc = QueryEncoder(fast, precision="int8")
    assert enc.mode == "onnx-int8"
    mine, theirs = enc.encode(TEXTS, batch_size=4), fast.encode(TEXTS)
    cosines = np.sum(mine * theirs, axis=1)
    assert np.min(cosines) > 0.97
    assert np.max(np.abs(mine - theirs)) > 1e-3  # really the 8-bit graph, not the fp32 one
    assert np.allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
    (int8,) = tmp_path.glob("*.int8.onnx")
    (fp32,) = [p for p in tmp_path.glob("*.onnx") if p != int8]
    assert int8.stat().st_size < fp32.stat().st_size / 3  # weights in a quarter of the bytes
    made = int8.stat().st_mtime_ns
    again = QueryEncoder(fast, precision="int8")
    assert int8.stat().st_mtime_ns == made  # read back, not quantized again
    # The same vector for a query whatever it is batched with.
    assert np.array_equal(again.encode(TEXTS[:2]), mine[:2])
    assert np.array_equal(again.encode(TEXTS[1:2]), mine[1:2])


def test_fp32_precision_keeps_the_embedder_vectors(torch_embedder) -> None:
    fast = load_embedder(ModelsConfig(device="cpu"))
    enc = QueryEncoder(fast, precision="fp32")
    assert enc.mode == "onnx"
    assert np.min(np.sum(enc.encode(TEXTS) * torch_embedder.encode(TEXTS), axis=1)) > 0.9999
    assert QueryEncoder(torch_embedder, precision="int8").mode in ("bf16", "direct")  # int8 needs ONNX
