"""Request bodies of the OpenAI-compatible API, validated at the boundary.

Unknown fields are kept (`extra="allow"`) so that an upstream backend receives everything the
client sent; the local engine uses only the fields it understands and rejects what it cannot do.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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


class ChatCompletionRequest(BaseModel):
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


class EmbeddingRequest(BaseModel):
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
