"""Turn a chat request into token segments.

A prompt is a list of segments rather than one flat list of ids, so that the prefill can take
precomputed KV for some of them (retrieved chunks, a shared system prompt) and compute only
the rest. Segment boundaries come from the request's structure, never from separator strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tiergate.errors import InvalidRequestError

SegmentKind = Literal["prefix", "chunk", "suffix"]


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    token_ids: tuple[int, ...]
    chunk_id: str | None = None


@dataclass(frozen=True)
class PromptPlan:
    segments: tuple[Segment, ...]

    @property
    def token_ids(self) -> list[int]:
        return [t for seg in self.segments for t in seg.token_ids]

    def __len__(self) -> int:
        return sum(len(seg.token_ids) for seg in self.segments)


def render_chat(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """The model's own chat template, ending with the assistant's turn opening."""
    try:
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    except Exception as exc:  # a template may reject role orders it does not support
        raise InvalidRequestError(f"messages do not fit the model's chat template: {exc}") from exc
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def plan_chat(tokenizer: Any, messages: list[dict[str, Any]]) -> PromptPlan:
    return PromptPlan((Segment("suffix", tuple(render_chat(tokenizer, messages))),))
