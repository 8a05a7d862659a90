"""Properties of request normalisation: the chat request model, `dump_request` (the body sent
upstream and the view the cache keys on) and the cache's request keys.

Equal requests must give equal keys whatever their JSON key order or formatting noise; fields that
only change transport must not split keys; fields that change the output must; and any input that
is not a valid request must fail with pydantic's ValidationError or the project's
InvalidRequestError, never with anything else.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tiergate.cache.keys import OUTPUT_PARAMS, cacheable, parse_request
from tiergate.errors import InvalidRequestError
from tiergate.service.schemas import EXTENSIONS, ChatCompletionRequest, EmbeddingRequest, dump_request

FAST = settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------ strategies

words = st.lists(st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8), min_size=1, max_size=6)
texts = st.text(max_size=40)
content = st.one_of(
    st.none(),
    texts,
    st.lists(st.builds(lambda t: {"type": "text", "text": t}, texts), min_size=1, max_size=3),
)
message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "developer", "user", "assistant", "tool"])},
    optional={"content": content, "name": st.text(min_size=1, max_size=8)},
)
conversation = st.lists(message, min_size=1, max_size=5).map(
    lambda msgs: [*msgs, {"role": "user", "content": "the question"}]
)
sampling = st.fixed_dictionaries({}, optional={
    "temperature": st.floats(0, 2),
    "top_p": st.floats(0.01, 1),
    "max_tokens": st.integers(1, 4096),
    "max_completion_tokens": st.integers(1, 4096),
    "stop": st.one_of(st.text(min_size=1, max_size=5), st.lists(st.text(min_size=1, max_size=5), max_size=4)),
    "seed": st.integers(-(2**63), 2**63 - 1),
    "n": st.integers(1, 16),
})
transport = st.fixed_dictionaries({}, optional={
    "stream": st.booleans(),
    "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()}),
    "user": st.text(max_size=10),
    "category": st.sampled_from(["code", "factual", "conversational"]),
    "kv": st.fixed_dictionaries({"enabled": st.booleans()}),
})
documents = st.lists(st.fixed_dictionaries({"text": st.text(min_size=1, max_size=30)},
                                           optional={"id": st.text(min_size=1, max_size=8)}), min_size=1, max_size=3)
# Fields the gateway does not know are kept and forwarded (`extra="allow"`).
small_json = st.recursive(st.none() | st.booleans() | st.integers(-1000, 1000) | texts,
                          lambda kids: st.lists(kids, max_size=3) | st.dictionaries(texts, kids, max_size=3),
                          max_leaves=6)
extras = st.dictionaries(st.sampled_from(["response_format", "tools", "metadata", "logit_bias", "x_vendor"]),
                         small_json, max_size=2)


@st.composite
def bodies(draw: st.DrawFn, with_transport: bool = True) -> dict[str, Any]:
    body = {"model": draw(st.sampled_from(["m", "gpt-4o", "smollm2-135m-instruct"])), "messages": draw(conversation)}
    body.update(draw(sampling))
    body.update(draw(extras))
    if with_transport:
        body.update(draw(transport))
    return body


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
# What json.loads also accepts: integers beyond 64 bits and unpaired surrogates (from "\ud800" escapes).
hostile_values = st.one_of(
    st.integers(min_value=2**64), st.integers(max_value=-(2**63) - 1),
    st.text(st.characters(categories=["Cs"]), min_size=1, max_size=3),
    st.text(st.characters(codec=None), max_size=10),
)


def reorder(value: Any, rng: random.Random) -> Any:
    """The same JSON value with every object's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: reorder(v, rng) for k, v in items}
    if isinstance(value, list):
        return [reorder(v, rng) for v in value]
    return value


def key_of(body: dict[str, Any], tenant: str = "t") -> str:
    req = ChatCompletionRequest.model_validate(body)
    return parse_request(tenant, req.model, dump_request(req)).exact_key


# ------------------------------------------------------------------ valid requests


@FAST
@given(bodies())
def test_valid_requests_parse_key_and_encode(body):
    req = ChatCompletionRequest.model_validate(body)
    view = dump_request(req)
    orjson.dumps(view)  # what goes upstream can be encoded
    key = parse_request("t", req.model, view)
    assert len(key.exact_key) == 32 and int(key.exact_key, 16) >= 0
    assert not EXTENSIONS & set(view)
    if body.get("temperature") == 0:  # greedy answers are always cacheable
        assert cacheable(key, 1.0) is None


@FAST
@given(bodies(), st.randoms(use_true_random=False))
def test_key_order_does_not_matter(body, rng):
    shuffled = reorder(body, rng)
    a, b = ChatCompletionRequest.model_validate(body), ChatCompletionRequest.model_validate(shuffled)
    assert dump_request(a) == dump_request(b)
    assert key_of(body) == key_of(shuffled)


@FAST
@given(bodies(), words, st.lists(st.sampled_from([" ", "  ", "\t", "\n", " \n "]), min_size=6, max_size=6))
def test_whitespace_and_unicode_forms_do_not_split_keys(body, text_words, gaps):
    plain = " ".join(text_words)
    noisy = gaps[0] + "".join(w + gaps[(i + 1) % len(gaps)] for i, w in enumerate(text_words))
    wide = plain.translate({c: c + 0xFEE0 for c in range(ord("!"), ord("~") + 1)})  # fullwidth ASCII, NFKC-equal
    keys = set()
    for text in (plain, noisy, wide):
        keys.add(key_of({**body, "messages": [*body["messages"][:-1], {"role": "user", "content": text}]}))
    assert len(keys) == 1


@FAST
@given(bodies(), texts)
def test_string_content_equals_one_text_part(body, text):
    as_string = {**body, "messages": [*body["messages"], {"role": "user", "content": text}]}
    as_parts = {**body, "messages": [*body["messages"], {"role": "user", "content": [{"type": "text", "text": text}]}]}
    assert key_of(as_string) == key_of(as_parts)
    a, b = (ChatCompletionRequest.model_validate(x).messages[-1] for x in (as_string, as_parts))
    assert a.text() == b.text() == text


@FAST
@given(bodies(with_transport=False), transport)
def test_transport_and_gateway_fields_do_not_change_the_key(body, extra):
    assert key_of(body) == key_of({**body, **extra})


@FAST
@given(bodies(), st.sampled_from(["temperature", "seed", "max_tokens", "stop"]), st.data())
def test_output_parameters_change_the_key(body, name, data):
    values = {"temperature": st.floats(0, 2), "seed": st.integers(0, 2**32), "max_tokens": st.integers(1, 4096),
              "stop": st.text(min_size=1, max_size=5)}[name]
    a, b = data.draw(values), data.draw(values)
    assume(a != b)
    assert name in OUTPUT_PARAMS
    assert key_of({**body, name: a}) != key_of({**body, name: b})


@FAST
@given(bodies(), st.text(min_size=1, max_size=10), st.text(min_size=1, max_size=10))
def test_tenants_and_models_never_share_keys(body, tenant_a, tenant_b):
    assume(tenant_a != tenant_b)
    assert key_of(body, tenant_a) != key_of(body, tenant_b)
    assert key_of(body) != key_of({**body, "model": body["model"] + "-other"})


@FAST
@given(bodies())
def test_dump_request_is_a_fixed_point(body):
    """Re-reading what is sent upstream sends the same again; unknown fields travel unchanged."""
    view = dump_request(ChatCompletionRequest.model_validate(body))
    assert dump_request(ChatCompletionRequest.model_validate(view)) == view
    for name in set(body) - set(ChatCompletionRequest.model_fields):
        assert view[name] == body[name]


@FAST
@given(bodies(), documents)
def test_documents_become_one_system_message_after_the_system_turns(body, docs):
    req = ChatCompletionRequest.model_validate({**body, "documents": docs})
    before = [m.model_dump(exclude_unset=True) for m in req.messages]
    messages = dump_request(req)["messages"]
    assert len(messages) == len(before) + 1
    at = next(i for i, m in enumerate(before) if m["role"] not in ("system", "developer"))
    note = messages[at]
    assert note["role"] == "system" and all(d["text"] in note["content"] for d in docs)
    assert messages[:at] + messages[at + 1:] == before
    assert [m.model_dump(exclude_unset=True) for m in req.messages] == before  # the request is untouched
    assert key_of({**body, "documents": docs}) != key_of(body)


# ------------------------------------------------------------------ normalised views of one field


@FAST
@given(st.one_of(st.none(), st.text(min_size=1, max_size=5), st.lists(st.text(max_size=5), max_size=4)))
def test_stop_as_string_or_list(stop):
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user"}], "stop": stop})
    expected = () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop)
    assert req.stop_list() == expected


@FAST
@given(st.lists(st.text(max_size=3), min_size=5, max_size=8))
def test_more_than_four_stop_sequences_are_refused(stop):
    with pytest.raises(ValidationError, match="at most 4 stop"):
        ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user"}], "stop": stop})


@FAST
@given(st.none() | st.integers(1, 10_000), st.none() | st.integers(1, 10_000))
def test_max_completion_tokens_wins_over_max_tokens(max_tokens, max_completion_tokens):
    req = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user"}],
                                                "max_tokens": max_tokens,
                                                "max_completion_tokens": max_completion_tokens})
    expected = max_completion_tokens if max_completion_tokens is not None else max_tokens
    assert req.requested_max_tokens() == expected


@FAST
@given(st.sampled_from(["max_tokens", "max_completion_tokens"]), st.integers(max_value=0))
def test_token_limits_below_one_are_refused(name, value):
    with pytest.raises(ValidationError, match=name):
        ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user"}], name: value})


@FAST
@given(st.booleans(), st.none() | st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}))
def test_usage_only_when_asked_for(stream, options):
    body = {"model": "m", "messages": [{"role": "user"}], "stream": stream, "stream_options": options}
    req = ChatCompletionRequest.model_validate(body)
    assert req.include_usage() is bool(options and options.get("include_usage"))


@FAST
@given(st.one_of(st.text(max_size=10), st.lists(st.text(max_size=10), min_size=1, max_size=5)))
def test_embedding_input_as_string_or_list(value):
    req = EmbeddingRequest.model_validate({"model": "e", "input": value})
    assert req.texts() == ([value] if isinstance(value, str) else value)


# ------------------------------------------------------------------ invalid input


def _validation_or_valid(model: type, body: Any) -> Any:
    try:
        return model.model_validate(body)
    except ValidationError:
        return None


@settings(FAST, max_examples=150)
@given(json_values)
def test_any_json_is_a_request_or_a_validation_error(body):
    for model in (ChatCompletionRequest, EmbeddingRequest):
        _validation_or_valid(model, body)


@settings(FAST, max_examples=150)
@given(bodies(), st.sampled_from(["model", "messages", "temperature", "stop", "n", "stream_options", "seed",
                                  "max_tokens", "documents", "retrieval", "kv", "category", "x_vendor"]),
       st.one_of(json_values, hostile_values), st.booleans())
def test_a_junk_field_is_refused_or_still_keys_and_encodes(body, name, junk, in_message):
    """One field replaced by junk (JSON or what json.loads also lets through): either a validation
    error, or a request that still forwards, keys and checks without any other exception."""
    if in_message:
        body = {**body, "messages": [*body["messages"][:-1], {"role": "user", "content": "q", name: junk}]}
    else:
        body = {**body, name: junk}
    req = _validation_or_valid(ChatCompletionRequest, body)
    if req is None:
        return
    view = dump_request(req)
    orjson.dumps(view)
    cacheable(parse_request("t", req.model, view), 1.0)


@settings(FAST, max_examples=150)
@given(st.dictionaries(st.sampled_from(["messages", "n", *OUTPUT_PARAMS[:8], "x"]),
                       st.one_of(json_values, hostile_values,
                                 st.lists(st.dictionaries(st.sampled_from(["role", "content", "name"]),
                                                          st.one_of(json_values, hostile_values), max_size=3),
                                          max_size=3)),
                       max_size=4))
def test_cache_keys_of_any_dict_are_a_key_or_an_invalid_request_error(request_dict):
    """The cache is a library too: any dict gives a key, or InvalidRequestError."""
    try:
        view = parse_request("t", "m", request_dict)
    except InvalidRequestError:
        return
    cacheable(view, 1.0)
