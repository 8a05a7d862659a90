"""Model-free units: keys, codec, cost model, stats."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tiergate.kvstore import KVFormat, KVStats, chunk_key, prefix_block_keys
from tiergate.kvstore.codec import BadKVError
from tiergate.kvstore.config import KVOptions
from tiergate.kvstore.decide import EXPLORE_EVERY, CostModel
from tiergate.kvstore.rope import apply_rope, delta_rotate

KEY_ARGS = ("smollm2@abc", "tok123", "L2H1D4-float32-none", (1, 2, 3), (10, 20, 30, 40))


def test_chunk_keys_are_stable_across_processes() -> None:
    code = (
        "from tiergate.kvstore import chunk_key;"
        f"print(chunk_key(*{KEY_ARGS!r}))"
    )
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": ""}).stdout.strip()
            for seed in (1, 2)}
    assert outs == {chunk_key(*KEY_ARGS)}


def test_chunk_keys_depend_on_everything_that_changes_the_kv() -> None:
    base = chunk_key(*KEY_ARGS)
    variants = [
        ("other@abc", *KEY_ARGS[1:]),
        (KEY_ARGS[0], "tok999", *KEY_ARGS[2:]),
        (*KEY_ARGS[:2], "L2H1D4-float16-none", *KEY_ARGS[3:]),
        (*KEY_ARGS[:3], (), KEY_ARGS[4]),
        (*KEY_ARGS[:4], (10, 20, 30)),
        (*KEY_ARGS[:3], (1, 2), (3, 10, 20, 30, 40)),  # same concatenation, other split
    ]
    keys = {chunk_key(*v) for v in variants}
    assert base not in keys and len(keys) == len(variants)


def test_prefix_block_keys_chain() -> None:
    a = list(prefix_block_keys("m", "t", "f", list(range(100)), 32))
    b = list(prefix_block_keys("m", "t", "f", [*range(64), 7, *range(65, 100)], 32))
    assert len(a) == 3 and a[:2] == b[:2] and a[2] != b[2]


def test_int8_codec_round_trip_and_shape_checks() -> None:
    fmt = KVFormat(2, 3, 8, torch.float32, "int8")
    kv = torch.randn(2, 2, 3, 5, 8)
    stored = fmt.encode(kv)
    assert stored.dtype == torch.uint8 and stored.numel() == fmt.bytes_per_token() * 5
    back = fmt.decode(stored, 5, torch.float32)
    assert (back - kv).abs().max() <= kv.abs().amax(-1, keepdim=True).max() / 127
    with pytest.raises(BadKVError):
        fmt.decode(stored, 4, torch.float32)
    plain = KVFormat(2, 3, 8, torch.float32)
    with pytest.raises(BadKVError):
        plain.decode(torch.zeros(2, 2, 3, 5, 4), 5, torch.float32)
    with pytest.raises(BadKVError):
        plain.decode(b"garbage", 5, torch.float32)  # type: ignore[arg-type]


def test_delta_rotation_composes() -> None:
    dim, theta = 8, 10000.0
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2).float() / dim))
    k = torch.randn(3, 4, dim)

    def at(pos: torch.Tensor) -> torch.Tensor:
        f = pos[:, None].float() * inv_freq[None]
        emb = torch.cat((f, f), -1)
        return apply_rope(k, emb.cos(), emb.sin())

    pos = torch.arange(4)
    torch.testing.assert_close(delta_rotate(at(pos), 37, inv_freq), at(pos + 37), atol=1e-5, rtol=1e-5)


def test_cost_model_prefers_recompute_for_slow_tiers() -> None:
    costs = CostModel()
    assert costs.should_load("disk", 10 << 20, 100, 32, 6)  # nothing measured yet: load
    costs.observe_prefill(token_layers=1e6, seconds=1.0)  # 1 µs per token-layer (a fast GPU)
    costs.observe_load("disk", 100 << 20, 1.0)
    costs.observe_load("host", 100 << 20, 0.01)
    for _ in range(30):
        costs.observe_load("disk", 100 << 20, 1.0)
    assert costs.should_load("host", 10 << 20, 100, 32, 6)
    assert not costs.should_load("disk", 10 << 20, 100, 32, 6)


def test_cost_model_blends_only_while_blending_beats_a_full_prefill() -> None:
    costs = CostModel()
    assert costs.blend_pays(1e6, 3e5, 1e6)  # nothing measured yet: blend
    costs.observe_prefill(token_layers=1e6, seconds=0.01)  # 10 ns per token-layer
    costs.observe_blend(token_layers=3e5, prompt_token_layers=1e6, seconds=0.009)  # 6 ns overhead
    assert costs.blend_pays(1e6, 1e5, 1e6)  # 1 + 6 ms < 10 ms
    asks = [costs.blend_pays(1e6, 5e5, 1e6) for _ in range(2 * EXPLORE_EVERY)]  # 5 + 6 ms > 10 ms
    assert asks.count(True) == 2  # only the periodic exploration blends


def test_stats_dict_and_prometheus_collector() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    stats = KVStats()
    stats.add(tokens_prompt=100, tokens_reused=80, chunk_misses=1)
    stats.add_tier("chunk_hits", "host", 3)
    d = stats.as_dict()
    assert d["chunk_hits"] == {"host": 3} and d["chunk_hit_rate"] == 0.75 and d["reused_share"] == 0.8
    registry = CollectorRegistry()
    stats.register(registry)
    text = generate_latest(registry).decode()
    assert 'tiergate_kv_chunk_hits_total{tier="host"} 3.0' in text
    assert "tiergate_kv_tokens_reused_total 80.0" in text


def test_kv_options_validate_the_ratio() -> None:
    from tiergate.errors import InvalidRequestError

    KVOptions(recompute_ratio=0.3)
    with pytest.raises(InvalidRequestError):
        KVOptions(recompute_ratio=1.5)


def test_tail_attention_matches_softmax_of_sdpa_weights() -> None:
    from types import SimpleNamespace

    from tiergate.kvstore.blend import _tail_attention

    torch.manual_seed(0)
    q = torch.randn(1, 6, 3, 8)  # 6 query heads over 2 KV heads (GQA)
    k = torch.randn(2, 10, 8)
    pos = torch.tensor([5, 8, 9])
    got = _tail_attention(SimpleNamespace(scaling=8**-0.5), q, pos, k)
    kk = k.repeat_interleave(3, dim=0)
    logits = torch.einsum("htd,hnd->htn", q[0], kk) * 8**-0.5
    logits[:, 0, 6:] = float("-inf")  # the query at position 5 sees keys 0..5
    logits[:, 1, 9:] = float("-inf")
    want = torch.softmax(logits, -1).mean(dim=(0, 1))
    torch.testing.assert_close(got, want)
    assert float(got.sum()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("computed", [300, 1900], ids=["sparse-grouped", "dense-causal"])
def test_attention_of_a_query_subset_equals_those_rows_of_causal_attention(computed: int) -> None:
    from types import SimpleNamespace

    import torch.nn.functional as F

    from tiergate.kvstore.model import LayerModel, query_groups

    torch.manual_seed(0)
    n, heads, kv_heads, dim = 2000, 4, 2, 16
    q = torch.randn(1, heads, n, dim)
    k, v = torch.randn(1, kv_heads, n, dim), torch.randn(1, kv_heads, n, dim)
    lm = SimpleNamespace(windows=[None], scaling=dim**-0.5)
    lm._causal = LayerModel._causal.__get__(lm)
    pos = torch.sort(torch.randperm(n - 1)[:computed]).values
    pos = torch.cat((pos, torch.tensor([n - 1])))
    if computed < 1000:
        assert len(query_groups(pos)) > 1  # the grouped path, with more than one group
    out = LayerModel.attend(lm, 0, q[:, :, pos], k, v, pos, n)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=lm.scaling, enable_gqa=True)
    torch.testing.assert_close(out, ref[:, :, pos].transpose(1, 2).reshape(1, pos.numel(), -1), atol=1e-5, rtol=1e-4)


def test_causal_attention_padded_to_a_length_step_equals_unpadded() -> None:
    from types import SimpleNamespace

    from tiergate.kvstore.model import LayerModel

    torch.manual_seed(0)
    q, k, v = torch.randn(1, 4, 300, 16), torch.randn(1, 2, 300, 16), torch.randn(1, 2, 300, 16)
    lm = SimpleNamespace(scaling=0.25)
    padded = LayerModel._causal(lm, q, k, v, step=256)  # padded to 512, as on CUDA
    assert padded.shape == (1, 4, 300, 16)
    torch.testing.assert_close(padded, LayerModel._causal(lm, q, k, v, step=1), atol=1e-5, rtol=1e-4)
