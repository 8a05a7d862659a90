"""Turn a chat request into token segments.

A prompt is a list of segments rather than one flat list of ids, so that the prefill can take
precomputed KV for some of them (retrieved chunks, a shared system prompt) and compute only
the rest. Segment boundaries come from the request's structure, never from separator strings.

With documents, the prompt is: the template's opening and the system text (prefix), each
document as its own chunk, then the rest of the template and the conversation (suffix). The
documents sit at the end of the system message; where the request has no system message, the
template's own default system prompt (if it has one) is kept in front of them, so adding
documents never silently drops it. Each segment is tokenized on its own, and the prompt is
their concatenation: full prefill and reuse see exactly the same ids.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal

from tiergate.errors import InvalidRequestError

SegmentKind = Literal["prefix", "chunk", "suffix"]
DOCUMENT_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class Document:
    text: str
    id: str | None = None


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

    def spans(self) -> list[tuple[Segment, int]]:
        """Each segment with its start position in the prompt."""
        out, pos = [], 0
        for seg in self.segments:
            out.append((seg, pos))
            pos += len(seg.token_ids)
        return out


def _template(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, tokenize=False)
    except Exception as exc:  # a template may reject role orders it does not support
        raise InvalidRequestError(f"messages do not fit the model's chat template: {exc}") from exc


def _encode(tokenizer: Any, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def render_chat(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """The model's own chat template, ending with the assistant's turn opening."""
    return list(_encode(tokenizer, _template(tokenizer, messages)))


@dataclass(frozen=True)
class ChatTemplate:
    """What a tokenizer's chat template does around the system message, found by rendering it."""

    default_system: str  # the text the template inserts when there is no system message
    opening_ids: tuple[int, ...]  # tokens before the system text: a fixed, model-wide prefix

    @classmethod
    def probe(cls, tokenizer: Any) -> ChatTemplate:
        mark = f"<{uuid.uuid4().hex}>"
        user = [{"role": "user", "content": "x"}]
        try:
            with_system = tokenizer.apply_chat_template(
                [{"role": "system", "content": mark}, *user], add_generation_prompt=True, tokenize=False
            )
            without = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        except Exception:  # templates without a system role
            return cls("", ())
        if with_system.count(mark) != 1:
            return cls("", ())
        head, tail = with_system.split(mark)
        default = ""
        if without.startswith(head) and without.endswith(tail) and len(without) >= len(head) + len(tail):
            default = without[len(head) : len(without) - len(tail)]
        return cls(default, _encode(tokenizer, head))


def plan_chat(
    tokenizer: Any,
    messages: list[dict[str, Any]],
    documents: list[Document] | tuple[Document, ...] = (),
    template: ChatTemplate | None = None,
) -> PromptPlan:
    if not documents:
        return PromptPlan((Segment("suffix", tuple(render_chat(tokenizer, messages))),))
    template = template or ChatTemplate.probe(tokenizer)
    rest = list(messages)
    if rest and rest[0].get("role") == "system":
        system = rest.pop(0).get("content")
        if not isinstance(system, str):
            raise InvalidRequestError("with documents, the system message content must be a string",
                                      param="messages")
    else:
        system = template.default_system
    mark = f"<{uuid.uuid4().hex}>"  # unguessable, so no message text can collide with it
    text = _template(tokenizer, [{"role": "system", "content": system + mark}, *rest])
    if text.count(mark) != 1:
        raise InvalidRequestError("the model's chat template has no place for documents", param="documents")
    head, tail = text.split(mark)
    segments = [Segment("prefix", _encode(tokenizer, head))]
    for i, doc in enumerate(documents):
        if not isinstance(doc.text, str):
            raise InvalidRequestError(f"documents[{i}].text must be a string", param="documents")
        if doc.text:
            ids = _encode(tokenizer, DOCUMENT_SEPARATOR + doc.text)
            segments.append(Segment("chunk", ids, doc.id if doc.id is not None else str(i)))
    segments.append(Segment("suffix", _encode(tokenizer, tail)))
    return PromptPlan(tuple(segments))
