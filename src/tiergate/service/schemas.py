"""Request bodies of the OpenAI-compatible API, validated at the boundary.

Unknown fields are kept (`extra="allow"`) so that an upstream backend receives everything the
client sent; the local engine uses only the fields it understands and rejects what it cannot do.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

# The range orjson (and most JSON peers) can encode; Python's json.loads reads any integer.
INT_MIN, INT_MAX = -(2**63), 2**64 - 1


def _valid_unicode(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # an unpaired surrogate, which JSON's \ud800 escapes can spell
        return False
    return True


def unencodable(value: Any) -> str | None:
    """Where a parsed JSON body holds something that cannot be encoded again, or None.

    `json.loads` accepts integers of any size and strings with unpaired surrogates; orjson, UTF-8
    and upstreams refuse them, so a body holding one would fail deep inside (a cache key, the
    upstream call). The message names the place but never echoes the value, which could not be
    encoded in the error either.
    """
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, at = stack.pop()
        if isinstance(item, str):
            if not _valid_unicode(item):
                return f"{at or 'body'}: the string holds an unpaired surrogate (not valid Unicode)"
        elif isinstance(item, int) and not isinstance(item, bool):
            if not INT_MIN <= item <= INT_MAX:
                return f"{at or 'body'}: the integer is outside the 64-bit range"
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and not _valid_unicode(key):
                    return f"{at or 'body'}: a key holds an unpaired surrogate (not valid Unicode)"
                stack.append((child, f"{at}.{key}" if at else str(key)))
        elif isinstance(item, list):
            stack.extend((child, f"{at}.{i}" if at else str(i)) for i, child in enumerate(item))
    return None


class JsonBody(BaseModel):
    """A request body that can be encoded again: forwarded, hashed into a key, or stored."""

    @model_validator(mode="before")
    @classmethod
    def _check_encodable(cls, data: Any) -> Any:
        problem = unencodable(data)
        if problem is not None:
            raise PydanticCustomError("unencodable", problem)
        return data


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text; non-text parts are the caller's to reject."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")

    def has_non_text(self) -> bool:
        return isinstance(self.content, list) and any(p.type != "text" for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, max_length=256)
    text: str = Field(min_length=1)


class KVIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    recompute_ratio: float | None = Field(None, ge=0.0, le=1.0)
    adaptive: bool | None = None


class RetrievalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    index: str = Field(min_length=1, max_length=64)
    k: int = Field(5, ge=1, le=50)
    filters: dict[str, str | int | float | bool] | None = None


class ChatCompletionRequest(JsonBody):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=16)
    # tiergate's own fields; never forwarded upstream.
    category: str | None = Field(None, max_length=64, description="Cache category; overrides the classifier.")
    documents: list[DocumentIn] | None = Field(None, max_length=64, description="Passages, each its own KV chunk.")
    retrieval: RetrievalIn | None = Field(None, description="Retrieve passages from an index into `documents`.")
    kv: KVIn | None = Field(None, description="KV reuse options for the local engine.")

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, stop: str | list[str] | None) -> str | list[str] | None:
        if isinstance(stop, list) and len(stop) > 4:
            raise ValueError("at most 4 stop sequences")
        return stop

    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class EmbeddingRequest(JsonBody):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] = Field(description="A string or a list of strings.")
    encoding_format: Literal["float", "base64"] = "float"

    @field_validator("input")
    @classmethod
    def _check_input(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and not value:
            raise ValueError("input must not be empty")
        if isinstance(value, list) and len(value) > 2048:
            raise ValueError("at most 2048 inputs per request")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class ErrorDetail(BaseModel):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, used for every refusal and failure the gateway answers."""

    error: ErrorDetail


ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Invalid request: the message names the field (the body is not valid JSON, or a value is out of range).",
    401: "Missing or invalid API key.",
    403: "The key may not use this route (admin routes need the admin key).",
    404: "No such model, index or job (for this tenant).",
    409: "The index is corrupt (a file missing or failing its checksum): delete it and build it again.",
    413: "The request body is over server.max_body_bytes.",
    429: "Rate limit or a bounded queue is full; retry after the Retry-After header's seconds.",
    502: "The upstream backend failed or answered with garbage.",
    503: "Not ready yet (models loading), draining, or the part asked for is disabled.",
    504: "The upstream backend did not answer in time.",
}


class BackendStatus(BaseModel):
    """One backend as `/readyz` and the admin API describe it (the local one adds queue figures)."""

    model_config = ConfigDict(extra="allow")
    name: str
    kind: str
    ready: bool
    models: list[str]


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for a route decorator: the errors it can answer, each in OpenAI's shape."""
    return {status: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[status]} for status in statuses}


COMPONENT_REF = "#/components/schemas/{model}"


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra=` for a route that parses its own body (see `deps.json_body`)."""
    ref = COMPONENT_REF.format(model=model.__name__)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}}


EXTENSIONS = frozenset({"category", "documents", "retrieval", "kv"})


def dump_request(req: BaseModel) -> dict[str, Any]:
    """The body to forward upstream: what the client sent, minus tiergate's own fields; documents
    (given or retrieved) become a system message, since an upstream knows nothing of chunks."""
    body = req.model_dump(exclude_unset=True, exclude=set(EXTENSIONS))
    documents = getattr(req, "documents", None)
    if documents:
        passages = "\n\n".join(f"[{d.id or i + 1}] {d.text}" for i, d in enumerate(documents))
        note = {"role": "system", "content": "Use these documents to answer.\n\n" + passages}
        messages = body["messages"]
        at = next((i for i, m in enumerate(messages) if m.get("role") not in ("system", "developer")), len(messages))
        body["messages"] = [*messages[:at], note, *messages[at:]]
    return body
