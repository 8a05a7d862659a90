"""Do two LLM answers to the same question agree? Used to verify sampled cache hits.

Answers to the same question differ in wording from run to run, so exact comparison would call
every sample a false hit. Two answers agree when their normalised texts are equal, or when
none of the checkable facts differ (the numbers they state, a leading yes/no, the code they
contain, the tool calls they make) and their embeddings are close.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from tiergate.cache.categories import Encoder

_CODE_RE = re.compile(r"```[^\n]*\n(.*?)```", re.S)
_NUM_RE = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)*(?![\w.]*\w)")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_YES = {"yes", "yeah", "yep", "correct", "true", "indeed", "absolutely", "sure"}
_NO = {"no", "nope", "not", "false", "incorrect", "never"}


@dataclass(frozen=True)
class Verdict:
    agreed: bool
    reason: str
    similarity: float | None = None


def answer_of(payload: bytes | dict[str, Any]) -> tuple[str, Any]:
    """(text, tool calls) of the first choice of an OpenAI chat completion (bytes or dict)."""
    data = orjson.loads(payload) if isinstance(payload, bytes | bytearray | memoryview) else payload
    try:
        message = data["choices"][0].get("message") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        return "", None
    return str(message.get("content") or ""), message.get("tool_calls")


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def _numbers(text: str) -> set[str]:
    prose = _CODE_RE.sub(" ", text)
    return {n.replace(",", "") for n in _NUM_RE.findall(prose)}


def _polarity(text: str) -> str | None:
    words = _norm(text).split()[:3]
    if not words:
        return None
    if words[0] in _YES:
        return "yes"
    if words[0] in _NO:
        return "no"
    return None


def _code_idents(text: str) -> set[str]:
    return {m for block in _CODE_RE.findall(text) for m in _IDENT_RE.findall(block)}


def _tool_signature(calls: Any) -> list[tuple[str, Any]]:
    out = []
    for call in calls or []:
        fn = (call or {}).get("function") or {}
        args = fn.get("arguments")
        with contextlib.suppress(orjson.JSONDecodeError):
            args = orjson.loads(args) if isinstance(args, str) else args
        out.append((fn.get("name"), args))
    return out


class AnswerComparator:
    def __init__(self, encoder: Encoder | None, *, min_similarity: float = 0.86) -> None:
        self.encoder = encoder
        self.min_similarity = min_similarity

    def compare(self, cached: bytes | dict[str, Any], fresh: bytes | dict[str, Any]) -> Verdict:
        a, calls_a = answer_of(cached)
        b, calls_b = answer_of(fresh)
        if calls_a or calls_b:
            same = _tool_signature(calls_a) == _tool_signature(calls_b)
            return Verdict(same, "tool calls equal" if same else "tool calls differ")
        if _norm(a) == _norm(b):
            return Verdict(True, "same text")
        if not a.strip() or not b.strip():
            return Verdict(False, "one answer is empty")
        if _polarity(a) != _polarity(b) and None not in (_polarity(a), _polarity(b)):
            return Verdict(False, "yes/no differs")
        na, nb = _numbers(a), _numbers(b)
        if (na or nb) and not (na & nb):
            return Verdict(False, "numbers differ")
        ca, cb = _code_idents(a), _code_idents(b)
        if ca and cb and len(ca & cb) / len(ca | cb) < 0.3:
            return Verdict(False, "code differs")
        if self.encoder is None:
            return Verdict(False, "texts differ")
        va, vb = self.encoder.encode([a, b])
        sim = float(np.dot(va, vb))
        return Verdict(sim >= self.min_similarity, "embedding", sim)
