"""Configuration of chunk KV reuse. The top-level Settings embeds `KVConfig` as `kv`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tiergate.errors import InvalidRequestError


class KVConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Reuse stored KV of chunks and prompt prefixes.")
    namespace: str = Field("kv", description="Namespace of KV objects in the tiered store.")
    recompute_ratio: float = Field(
        0.15, ge=0.0, le=1.0,
        description="Share of reused chunk tokens recomputed to restore cross-chunk attention "
        "(0 = pure reuse, 1 = exact full prefill). Requests may override it.",
    )
    adaptive: bool = Field(
        False, description="Per chunk, scale the recompute share by how much its KV deviates in context."
    )
    full_layers: int = Field(1, ge=1, description="Layers computed for every token before selecting.")
    selection: Literal["attention", "deviation", "attention_deviation"] = Field(
        "deviation",
        description="How the recomputed tokens are chosen. 'deviation': the tokens whose K/V at the "
        "selection layer moved most from the stored ones (CacheBlend). 'attention': the chunk tokens the "
        "prompt's tail (the question) attends to most, summed over all layers in a pure-reuse pass first: "
        "about half the first-token KL on SmolLM2, but the extra pass halves the time-to-first-token gain "
        "(7B shape, 8K tokens, H100: 1.5x instead of 3.1x). 'attention_deviation': their product.",
    )
    head_tokens: int = Field(0, ge=0, description="Always recompute this many first tokens of each chunk.")
    chunk_context: Literal["prefix", "sink", "none"] = Field(
        "prefix",
        description="What a chunk's KV is computed after. 'prefix': the request's own prefix (template "
        "opening + system text), so chunks are shared by requests with the same system prompt, with "
        "the best fidelity; 'sink': only the template's fixed opening tokens, shared by all requests; "
        "'none': at position 0 on its own (its first token then acts as an attention sink).",
    )
    min_chunk_tokens: int = Field(16, ge=1, description="Shorter chunks are computed, never stored.")
    prefix_cache: bool = Field(True, description="Exact reuse of shared prompt prefixes (system, history).")
    prefix_block_tokens: int = Field(64, ge=8, description="Granularity of prefix reuse, in tokens.")
    store_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of stored KV; auto = the model's."
    )
    compression: Literal["none", "int8"] = Field(
        "none", description="int8: per-token, per-head absmax quantisation (about 2x smaller in bf16)."
    )
    decide_load: bool = Field(
        True, description="Recompute a chunk instead of loading it when its tier is slower than compute."
    )
    populate: Literal["after", "off"] = Field(
        "after", description="'after': compute and store missed chunks once the request has finished."
    )


@dataclass(frozen=True)
class KVOptions:
    """Per-request KV reuse settings (`"kv": {...}` in a request; header `X-Tiergate-KV: off`
    maps to `enabled=False`). None means the server's `KVConfig` value."""

    enabled: bool = True
    recompute_ratio: float | None = None
    adaptive: bool | None = None
    chunks: bool = True  # reuse chunk KV; False leaves exact prefix reuse only
    prefix: bool = True  # reuse stored prompt prefixes
    store: bool = True  # write KV this request computed
    namespace: str = ""  # whose KV this is (the tenant): reuse never crosses namespaces

    def __post_init__(self) -> None:
        r = self.recompute_ratio
        if r is not None and not (isinstance(r, int | float) and 0.0 <= float(r) <= 1.0):
            raise InvalidRequestError(
                f"kv.recompute_ratio must be a number between 0 and 1, got {r!r}", param="kv.recompute_ratio"
            )
