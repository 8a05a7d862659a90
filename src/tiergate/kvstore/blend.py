"""Prefill with reused KV and selective recompute (CacheBlend-style).

Every prompt token is one of three kinds:

- fresh: computed in every layer (the system text, the question, chunks with no stored KV);
- exact: KV of a stored prompt prefix, identical to what a full prefill computes: never touched;
- approx: KV of a chunk computed on its own. It lacks attention to the chunks before it.

The first `full_layers` run for fresh and approx tokens alike. At the next layer the approx
tokens are ranked and the top share (the recompute share) stays in the computation with the
fresh tokens for the remaining layers; the others keep their stored KV, re-rotated to their
real positions. Ranking by the K/V deviation at that layer (CacheBlend, the default) barely beat
a random choice on SmolLM2: the error of chunk KV computed without its neighbours is spread over
most tokens in the deep layers. Ranking by how much the prompt's tail (the question) attends to
each chunk token, summed over all layers in a pure-reuse pass, halved the first-token KL, but
that extra pass halves the time-to-first-token gain. With no approx tokens this is exactly a full
prefill (same code path), so r = 1 and "KV off" agree with it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from tiergate.kvstore.model import LayerModel, query_groups
from tiergate.kvstore.rope import apply_rope


@dataclass
class Span:
    """KV for prompt positions start..start+n from the store: (L, 2, Hkv, n, D), keys pre-RoPE."""

    start: int
    kv: torch.Tensor
    exact: bool
    chunk: int = -1  # index of the chunk among the request's chunks (approx spans)

    @property
    def n(self) -> int:
        return int(self.kv.shape[3])


@dataclass
class BlendResult:
    logits: torch.Tensor  # (vocab,) for the last prompt token
    keys: torch.Tensor  # (L, Hkv, N, D) post-RoPE, for decoding
    values: torch.Tensor  # (L, Hkv, N, D)
    keys_pre: torch.Tensor  # (L, Hkv, N, D) pre-RoPE, for storing spans
    reused: int  # prompt tokens whose stored KV was kept
    recomputed: int  # approx tokens recomputed after selection
    computed: int  # fresh tokens
    token_layers: float  # token-layer units of compute done
    chunk_ratios: dict[int, float] = field(default_factory=dict)  # chunk -> share recomputed
    chunk_deviation: dict[int, float] = field(default_factory=dict)  # chunk -> mean deviation
    attention: torch.Tensor | None = None  # (N,) tail tokens' attention per position (probe=True)


class _Feeder:
    """Puts the stored spans into the working KV buffers.

    On CUDA with spans in host memory, layer i+1 is copied on a side stream while layer i
    computes (the caller rotates each layer's keys once they arrived). Spans already on the
    model's device are copied once, all layers per span, and their keys rotated to their
    positions in `kpost` on the way."""

    def __init__(self, spans: list[Span], kbuf: torch.Tensor, vbuf: torch.Tensor, kpost: torch.Tensor,
                 cos: torch.Tensor, sin: torch.Tensor) -> None:
        self.spans = spans
        self.kbuf, self.vbuf = kbuf, vbuf
        dev = kbuf.device
        self.async_ = dev.type == "cuda" and any(s.kv.device != dev for s in spans)
        self.stream = torch.cuda.Stream(dev) if self.async_ else None
        self.events: dict[int, torch.cuda.Event] = {}
        self.layers = kbuf.shape[0]
        if not self.async_:
            for s in spans:
                at = slice(s.start, s.start + s.n)
                kbuf[:, :, at].copy_(s.kv[:, 0])
                vbuf[:, :, at].copy_(s.kv[:, 1])
                kpost[:, :, at] = apply_rope(s.kv[:, 0], cos[:, at], sin[:, at])

    def _copy(self, layer: int) -> None:
        for s in self.spans:
            src = s.kv[layer]
            self.kbuf[layer, :, s.start : s.start + s.n].copy_(src[0], non_blocking=True)
            self.vbuf[layer, :, s.start : s.start + s.n].copy_(src[1], non_blocking=True)

    def issue(self, layer: int) -> None:
        if not self.async_ or layer >= self.layers or layer in self.events:
            return
        assert self.stream is not None
        self.stream.wait_stream(torch.cuda.current_stream(self.kbuf.device))
        with torch.cuda.stream(self.stream):
            self._copy(layer)
            ev = torch.cuda.Event()
            ev.record(self.stream)
        self.events[layer] = ev

    def wait(self, layer: int) -> None:
        if not self.async_:
            return
        self.issue(layer)
        torch.cuda.current_stream(self.kbuf.device).wait_event(self.events.pop(layer))
        self.issue(layer + 1)


def _deviation(k: torch.Tensor, v: torch.Tensor, ks: torch.Tensor, vs: torch.Tensor) -> torch.Tensor:
    """Per-token squared deviation of fresh (k, v) from stored (ks, vs), each (H, n, D),
    normalised by the stored tensors' mean squared norm so K and V weigh alike."""
    dk = (k.float() - ks.float()).pow(2).sum(dim=(0, 2))
    dv = (v.float() - vs.float()).pow(2).sum(dim=(0, 2))
    nk = ks.float().pow(2).sum(dim=(0, 2)).mean().clamp_min(1e-12)
    nv = vs.float().pow(2).sum(dim=(0, 2)).mean().clamp_min(1e-12)
    return dk / nk + dv / nv


def _tail_attention(lm: LayerModel, q: torch.Tensor, q_pos: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Attention of post-RoPE queries q (1, Hq, T, D) at positions q_pos over post-RoPE keys
    k (Hkv, N, D), averaged over heads and queries: (N,)."""
    rep = q.shape[1] // k.shape[0]
    kk = k.repeat_interleave(rep, dim=0).float()
    logits = torch.einsum("htd,hnd->htn", q[0].float(), kk) * lm.scaling
    kp = torch.arange(k.shape[1], device=k.device)
    logits = logits.masked_fill(kp[None, None, :] > q_pos[None, :, None], float("-inf"))
    return torch.softmax(logits, dim=-1).mean(dim=(0, 1))


def _select(
    dev: torch.Tensor, chunk_of: torch.Tensor, ratio: float, adaptive: bool, reference: float | None,
    max_ratio: float, score: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[int, float], dict[int, float]]:
    """Indices (into the approx tokens) to recompute, and per-chunk ratios and deviations.

    Chunk shares (adaptive) follow the deviation `dev`; tokens are ranked by `score` (default dev)."""
    score = dev if score is None else score
    chunks = torch.unique(chunk_of).tolist()
    means = {c: float(dev[chunk_of == c].mean()) for c in chunks}
    if not adaptive:
        k = min(dev.numel(), math.ceil(ratio * dev.numel() - 1e-9))
        picked = torch.topk(score, k).indices if k else dev.new_zeros(0, dtype=torch.long)
        ratios = {c: float((chunk_of[picked] == c).sum()) / float((chunk_of == c).sum()) for c in chunks}
        return picked, ratios, means
    # Cache-Craft idea: a chunk whose KV moved more in this context depends more on its
    # neighbours and gets a larger share; one that barely moved keeps (almost) all its KV.
    ref = reference if reference and reference > 0 else (sum(means.values()) / len(means))
    picked_parts, ratios = [], {}
    for c in chunks:
        idx = (chunk_of == c).nonzero().flatten()
        rc = min(max_ratio, ratio * means[c] / ref) if ref > 0 else ratio
        k = min(idx.numel(), math.ceil(rc * idx.numel() - 1e-9))
        ratios[c] = k / idx.numel()
        if k:
            picked_parts.append(idx[torch.topk(score[idx], k).indices])
    picked = torch.cat(picked_parts) if picked_parts else dev.new_zeros(0, dtype=torch.long)
    return picked, ratios, means


@torch.inference_mode()
def blend_prefill(
    lm: LayerModel,
    token_ids: list[int],
    spans: list[Span] | None = None,
    *,
    ratio: float = 0.15,
    full_layers: int = 1,
    adaptive: bool = False,
    reference_deviation: float | None = None,
    max_ratio: float = 1.0,
    selection: str = "deviation",
    head_tokens: int = 0,
    probe: bool = False,
) -> BlendResult:
    """Prefill `token_ids` with stored `spans`; see the module docstring.

    selection ranks the approx tokens: "deviation" (fresh vs stored K/V at the selection layer),
    "attention" (how much the tokens after the last chunk attend to each token, summed over all
    layers in a cheap pure-reuse pass first), or "attention_deviation" (their product).
    head_tokens: the first tokens of every chunk are always recomputed (within the share).
    probe: record the tail tokens' attention per position, summed over layers (in the result)."""
    spans = spans or []
    L, H, D = lm.shape.layers, lm.shape.kv_heads, lm.shape.head_dim
    N = len(token_ids)
    dev = lm.device
    kind = torch.zeros(N, dtype=torch.int8)  # 0 fresh, 1 approx, 2 exact
    chunk_of = torch.full((N,), -1, dtype=torch.long)
    for s in spans:
        if s.start < 0 or s.start + s.n > N:
            raise ValueError(f"span {s.start}+{s.n} outside a prompt of {N} tokens")
        kind[s.start : s.start + s.n] = 2 if s.exact else 1
        chunk_of[s.start : s.start + s.n] = s.chunk
    if N == 0 or kind[-1] != 0:
        raise ValueError("the last prompt token must be computed (it produces the first logits)")
    approx_pos = (kind == 1).nonzero().flatten()
    selecting = approx_pos.numel() > 0 and ratio > 0
    prior = None
    if selecting and selection in ("attention", "attention_deviation"):
        prior = blend_prefill(lm, token_ids, spans, ratio=0.0, probe=True).attention
        prior = prior[approx_pos.to(prior.device)].cpu()
    head = torch.zeros(approx_pos.numel(), dtype=torch.bool)
    if head_tokens > 0:
        for s in spans:
            if not s.exact:
                head |= (approx_pos >= s.start) & (approx_pos < s.start + min(head_tokens, s.n))
    last_approx = int(approx_pos.max()) if approx_pos.numel() else -1
    attention = torch.zeros(N, device=dev) if probe else None
    select_layer = min(full_layers, L - 1) if selecting else -1

    kbuf = torch.empty((L, H, N, D), dtype=lm.dtype, device=dev)
    vbuf = torch.empty((L, H, N, D), dtype=lm.dtype, device=dev)
    kpost = torch.empty((L, H, N, D), dtype=lm.dtype, device=dev)
    cos, sin = lm.cos_sin(torch.arange(N, device=dev))
    feeder = _Feeder(spans, kbuf, vbuf, kpost, cos[0], sin[0])
    feeder.issue(0)

    active_cpu = ((kind == 0) | (kind == 1)).nonzero().flatten() if selecting else (kind == 0).nonzero().flatten()
    all_active = active_cpu.numel() == N
    active = active_cpu.to(dev)
    ids = torch.tensor(token_ids, device=dev)
    cos_a, sin_a = cos[:, :, active], sin[:, :, active]  # of the active tokens
    hidden = lm.embed(ids[active])[None]
    groups: list[int] | None = None  # query groups of the active set, for attention
    token_layers = 0.0
    ratios: dict[int, float] = {}
    means: dict[int, float] = {}
    recomputed = 0

    for layer in range(L):
        q, k, v = lm.qkv(layer, hidden)
        feeder.wait(layer)
        if layer == select_layer:
            # Rank the approx tokens by how far their fresh K/V moved from the stored ones.
            is_approx = kind[active_cpu] == 1
            a_idx = is_approx.nonzero().flatten().to(dev)
            deviation = _deviation(k[0][:, a_idx], v[0][:, a_idx], kbuf[layer][:, approx_pos.to(dev)],
                                   vbuf[layer][:, approx_pos.to(dev)])
            deviation = deviation.cpu()
            score = deviation
            if prior is not None:
                score = prior if selection == "attention" else prior * deviation
            if head.any():
                score = score.clone()
                score[head] = float("inf")
            picked, ratios, means = _select(
                deviation, chunk_of[approx_pos], ratio, adaptive, reference_deviation, max_ratio, score
            )
            recomputed = int(picked.numel())
        # Fresh K/V for every token computed in this layer (at the selection layer, all the
        # approx tokens too: fresh values are better than stored ones).
        if all_active:
            kbuf[layer].copy_(k[0])
            vbuf[layer].copy_(v[0])
            kpost[layer] = apply_rope(k[0], cos[0], sin[0])
        else:
            kbuf[layer].index_copy_(1, active, k[0])
            vbuf[layer].index_copy_(1, active, v[0])
            if feeder.async_:  # the stored keys of this layer just arrived, pre-RoPE
                kpost[layer] = apply_rope(kbuf[layer], cos[0], sin[0])
            else:
                kpost[layer].index_copy_(1, active, apply_rope(k[0], cos_a[0], sin_a[0]))
        if layer == select_layer:
            keep = ~is_approx
            keep[is_approx.nonzero().flatten()[picked]] = True
            keep_d = keep.to(dev)
            active_cpu = active_cpu[keep]
            active = active_cpu.to(dev)
            cos_a, sin_a = cos[:, :, active], sin[:, :, active]
            groups = None
            q, hidden = q[:, :, keep_d], hidden[:, keep_d]
            all_active = active_cpu.numel() == N
        if all_active:
            qpost = apply_rope(q, cos, sin)
            out = lm.attend(layer, qpost, kpost[layer][None], vbuf[layer][None], None, N)
        else:
            qpost = apply_rope(q, cos_a, sin_a)
            if groups is None:
                groups = query_groups(active_cpu)
            out = lm.attend(layer, qpost, kpost[layer][None], vbuf[layer][None], active, N, groups)
        if attention is not None:
            tail = active > last_approx
            attention += _tail_attention(lm, qpost[:, :, tail], active[tail], kpost[layer])
        hidden = lm.finish(layer, hidden, out)
        token_layers += active_cpu.numel()

    n_exact = int((kind == 2).sum())
    n_approx = int(approx_pos.numel())
    return BlendResult(
        logits=lm.logits(hidden[:, -1:]),
        keys=kpost, values=vbuf, keys_pre=kbuf,
        reused=n_exact + n_approx - recomputed,
        recomputed=recomputed,
        computed=int((kind == 0).sum()),
        token_layers=token_layers,
        chunk_ratios=ratios, chunk_deviation=means, attention=attention,
    )


@torch.inference_mode()
def compute_span_kv(lm: LayerModel, context_ids: list[int], token_ids: list[int]) -> torch.Tensor:
    """KV of `token_ids` computed on their own after `context_ids`: (L, 2, Hkv, n, D), pre-RoPE."""
    out = blend_prefill(lm, list(context_ids) + list(token_ids))
    c = len(context_ids)
    return torch.stack((out.keys_pre[:, :, c:], out.values[:, :, c:]), dim=1)
