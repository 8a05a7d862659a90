"""Request keys: what makes two chat requests the same, exactly or semantically.

- `exact_key`: a hash of everything that changes the output (tenant, model, system prompt,
  tools, response format, output-changing sampling parameters, the full message history).
- `setting_key`: the same minus the messages; a semantic hit needs an equal setting key.
- `context_key`: the conversation before the last user turn; a semantic hit needs a compatible
  context, so "and in Python?" after two different questions never matches.

Parameters that only change transport (stream, stream_options, user, metadata) are not keyed:
a complete JSON response can be replayed as a stream.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass, field
from typing import Any

import orjson

from tiergate.errors import InvalidRequestError

# Everything here changes what the model returns for the same messages.
OUTPUT_PARAMS: tuple[str, ...] = (
    "temperature", "top_p", "top_k", "min_p", "max_tokens", "max_completion_tokens", "stop", "seed",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "logit_bias", "n", "logprobs",
    "top_logprobs", "response_format", "tools", "tool_choice", "parallel_tool_calls", "functions",
    "function_call", "reasoning_effort", "modalities", "prediction",
)


def normalize_text(text: str) -> str:
    """NFKC, collapsed whitespace: formatting noise never splits keys."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def content_text(content: Any) -> str:
    """The text of a message's content (a string or a list of parts). Non-text parts (images,
    audio) contribute a digest of their JSON, so two different images never share a key."""
    if content is None:
        return ""
    if isinstance(content, str):
        return normalize_text(content)
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                parts.append(normalize_text(str(part.get("text", ""))))
            else:
                parts.append("<" + _digest(part, 8) + ">")
        return " ".join(p for p in parts if p)
    raise InvalidRequestError("message content must be a string or a list of parts", param="messages")


def _canonical(obj: Any) -> bytes:
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError as exc:  # integers beyond 64 bits, unpaired surrogates
        raise InvalidRequestError(f"the request holds a value that cannot be encoded as JSON: {exc}") from exc


def _digest(obj: Any, nbytes: int = 16) -> str:
    return hashlib.blake2b(_canonical(obj), digest_size=nbytes).hexdigest()


def _message_view(msg: Any) -> dict[str, Any]:
    if not isinstance(msg, dict) or "role" not in msg:
        raise InvalidRequestError("every message needs a role", param="messages")
    out: dict[str, Any] = {"role": msg["role"], "content": content_text(msg.get("content"))}
    for extra in ("name", "tool_calls", "tool_call_id", "function_call"):
        if msg.get(extra) is not None:
            out[extra] = msg[extra]
    return out


@dataclass(frozen=True, slots=True)
class RequestView:
    """A chat request reduced to what the cache compares."""

    tenant: str
    model: str
    exact_key: str
    setting_key: str
    context_key: str
    query: str  # the last user turn; "" when the last message is not from the user
    history: tuple[str, ...]  # earlier user turns, oldest first
    shape_key: str  # the role sequence and every earlier turn that is neither user nor assistant text
    params: dict[str, Any] = field(hash=False)

    @property
    def semantic_ok(self) -> bool:
        return bool(self.query)


def parse_request(tenant: str, model: str, request: dict[str, Any]) -> RequestView:
    """Reduce an OpenAI chat request to its keys. Raises InvalidRequestError on a malformed one."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty list", param="messages")
    views = [_message_view(m) for m in messages]
    params = {k: request[k] for k in OUTPUT_PARAMS if request.get(k) is not None}
    system = [v["content"] for v in views if v["role"] in ("system", "developer")]
    turns = [v for v in views if v["role"] not in ("system", "developer")]
    setting = {"t": tenant, "m": model, "s": system, "p": params}
    setting_key = _digest(setting)
    exact = _digest({"set": setting_key, "msgs": turns})
    last = turns[-1] if turns else None
    if last is not None and last["role"] == "user" and len(last) == 2:
        query, earlier = last["content"], turns[:-1]
    else:
        query, earlier = "", turns
    # Earlier turns compared case- and space-insensitively: "Sort a list" == "sort a  list".
    context = [{k: (v.lower() if k == "content" else v) for k, v in t.items()} for t in earlier]
    context_key = _digest(context, 8)
    history = tuple(t["content"] for t in earlier if t["role"] == "user")
    # Assistant wording varies between runs, tool results and calls do not.
    shape = [t["role"] if t["role"] in ("user", "assistant") and len(t) == 2 else t for t in earlier]
    shape_key = _digest(shape, 8)
    return RequestView(tenant, model, exact, setting_key, context_key, query, history, shape_key, params)


def exact_key(tenant: str, model: str, request: dict[str, Any]) -> str:
    """Hash of tenant, model, system prompt, tools, response format, output-changing
    sampling parameters and the full message history (hex, 32 chars)."""
    return parse_request(tenant, model, request).exact_key


def context_key(tenant: str, model: str, request: dict[str, Any]) -> str:
    """Hash of the conversation before the last user turn (hex, 16 chars)."""
    return parse_request(tenant, model, request).context_key


def key_label(key: str) -> int:
    """A positive 63-bit integer id for a hex key (the ANN label and in-memory id)."""
    return int(key[:16], 16) & 0x7FFF_FFFF_FFFF_FFFF


def cacheable(view: RequestView, max_temperature: float) -> str | None:
    """None if the request may use the cache, else why not.

    Greedy requests (temperature 0) are always cacheable. Others are cacheable up to
    `max_temperature` when they ask for one choice: a stored answer is one valid sample, but
    several choices or a high temperature mean the caller wants variety.
    """
    p = view.params
    temperature = p.get("temperature", 1.0)
    if not isinstance(temperature, int | float):
        return "temperature is not a number"
    if temperature == 0:
        return None
    n = p.get("n", 1)
    if not isinstance(n, int | float):
        return "n is not a number"
    if n not in (0, 1):  # 0 and 1 both mean one choice
        return "n > 1 asks for several samples"
    if temperature > max_temperature:
        return f"temperature {temperature} above {max_temperature}"
    return None
