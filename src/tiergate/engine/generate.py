"""One generation, start to finish, on the calling thread: prefill, then decode token by token."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from tiergate.engine.detokenize import StreamDecoder
from tiergate.engine.prefill import prefill
from tiergate.engine.prompt import PromptPlan, plan_chat
from tiergate.engine.sampling import SamplingParams, make_generator, next_token
from tiergate.errors import InvalidRequestError
from tiergate.models import Generator


@dataclass(frozen=True)
class GenerationRequest:
    messages: list[dict[str, Any]]
    sampling: SamplingParams = field(default_factory=SamplingParams)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    time_to_first_token_s: float = 0.0

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

    def __init__(self, generator: Generator, *, max_prompt_tokens: int = 8192) -> None:
        self.gen = generator
        self.max_prompt_tokens = max_prompt_tokens
        self.eos_ids = _eos_ids(generator)

    @property
    def model_id(self) -> str:
        return self.gen.model_id

    def plan(self, request: GenerationRequest) -> PromptPlan:
        plan = plan_chat(self.gen.tokenizer, request.messages)
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
        pre = prefill(model, plan)
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
        yield Finished(reason, Usage(pre.prompt_tokens, produced, pre.cached_tokens, ttft))


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
