"""One generation, start to finish, on the calling thread: prefill, then decode token by token."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from tiergate.engine.detokenize import StreamDecoder
from tiergate.engine.prefill import PrefillResult, cache_from_blend, prefill
from tiergate.engine.prompt import ChatTemplate, Document, PromptPlan, plan_chat
from tiergate.engine.sampling import SamplingParams, make_generator, next_token
from tiergate.errors import InvalidRequestError
from tiergate.kvstore.config import KVOptions
from tiergate.kvstore.model import LayerModel, UnsupportedModelError
from tiergate.kvstore.prefiller import KVPrefiller, PendingWrites
from tiergate.kvstore.store import KVStore
from tiergate.models import Generator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[dict[str, Any]]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    documents: list[Document] = field(default_factory=list)  # each its own reusable chunk
    kv: KVOptions = field(default_factory=KVOptions)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # prompt tokens whose KV was reused rather than computed
    time_to_first_token_s: float = 0.0
    recomputed_tokens: int = 0  # reused chunk tokens recomputed to restore cross-chunk attention
    chunks_hit: int = 0
    chunks_missed: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    reason: Literal["stop", "length", "cancelled"]
    usage: Usage


Event = TextDelta | Finished


class Engine:
    """Runs generations for one loaded model. Not thread-safe: one generation per worker."""

    def __init__(
        self, generator: Generator, *, max_prompt_tokens: int = 8192, kv_store: KVStore | None = None
    ) -> None:
        self.gen = generator
        self.max_prompt_tokens = max_prompt_tokens
        self.kv_store = kv_store
        self.eos_ids = _eos_ids(generator)
        self.template = ChatTemplate.probe(generator.tokenizer)
        try:
            lm: LayerModel | None = LayerModel(generator.model)
        except UnsupportedModelError as exc:
            log.warning("KV reuse disabled: %s", exc)
            lm = None
        self.prefiller = (
            KVPrefiller(lm, generator.tokenizer, generator.model_id, kv_store, self.template.opening_ids)
            if lm is not None else None
        )

    def sibling(self) -> Engine:
        """Another engine on the same weights and KV store, for another worker thread."""
        return Engine(self.gen, max_prompt_tokens=self.max_prompt_tokens, kv_store=self.kv_store)

    @property
    def model_id(self) -> str:
        return self.gen.model_id

    def plan(self, request: GenerationRequest) -> PromptPlan:
        plan = plan_chat(self.gen.tokenizer, request.messages, request.documents, self.template)
        if len(plan) > self.max_prompt_tokens:
            raise InvalidRequestError(
                f"prompt has {len(plan)} tokens, over the limit of {self.max_prompt_tokens}",
                code="context_length_exceeded",
                param="messages",
            )
        return plan

    @torch.inference_mode()
    def run(self, request: GenerationRequest, cancel: threading.Event | None = None) -> Iterator[Event]:
        started = time.perf_counter()
        params = request.sampling
        model = self.gen.model
        plan = self.plan(request)
        pre, pending = self._prefill(plan, request.kv)
        ttft = time.perf_counter() - started
        rng = make_generator(params, self.gen.device)
        decoder = StreamDecoder(self.gen.tokenizer, params.stop)
        logits, cache = pre.logits, pre.cache
        position = pre.prompt_tokens
        reason: Literal["stop", "length", "cancelled"] = "length"
        produced = 0
        while produced < params.max_tokens:
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            token = next_token(logits, params, rng)
            produced += 1
            if token in self.eos_ids:
                reason = "stop"
                break
            text = decoder.push(token)
            if text:
                yield TextDelta(text)
            if decoder.stopped:
                reason = "stop"
                break
            if produced == params.max_tokens:
                break
            out = model(
                input_ids=torch.tensor([[token]], device=model.device),
                past_key_values=cache,
                cache_position=torch.tensor([position], device=model.device),
                use_cache=True,
            )
            logits, cache = out.logits[0, -1], out.past_key_values
            position += 1
        if not decoder.stopped:
            tail = decoder.flush()
            if tail:
                yield TextDelta(tail)
        yield Finished(reason, Usage(
            pre.prompt_tokens, produced, pre.cached_tokens, ttft,
            recomputed_tokens=pre.recomputed_tokens, chunks_hit=pre.chunks_hit, chunks_missed=pre.chunks_missed,
        ))
        # After the answer: store the KV this request had to compute, for the next ones.
        if pending and self.prefiller is not None:
            try:
                self.prefiller.populate(pending)
            except Exception:  # storing is best effort; the answer is already out
                log.exception("storing computed KV failed")

    def prefill(self, plan: PromptPlan, kv: KVOptions | None = None) -> PrefillResult:
        """Prefill only (benchmarks, warm-up); stores missed KV before returning."""
        pre, pending = self._prefill(plan, kv or KVOptions())
        if pending and self.prefiller is not None:
            self.prefiller.populate(pending)
        return pre

    def _prefill(self, plan: PromptPlan, kv: KVOptions) -> tuple[PrefillResult, PendingWrites | None]:
        if self.prefiller is None:
            return prefill(self.gen.model, plan), None
        out = self.prefiller.prefill(plan, kv)
        res = out.result
        pre = PrefillResult(
            res.logits, cache_from_blend(self.gen.model, res), out.prompt_tokens, out.cached_tokens,
            recomputed_tokens=res.recomputed, chunks_hit=out.chunks_hit, chunks_missed=out.chunks_missed,
            extra={"prefill_s": out.seconds, "chunk_ratios": res.chunk_ratios},
        )
        return pre, out.pending


def _eos_ids(generator: Generator) -> frozenset[int]:
    ids: set[int] = set()
    tok_eos = generator.tokenizer.eos_token_id
    if tok_eos is not None:
        ids.add(int(tok_eos))
    cfg = getattr(generator.model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(int(e) for e in eos)
    return frozenset(ids)
