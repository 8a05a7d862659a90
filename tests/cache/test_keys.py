from __future__ import annotations

import pytest

from tiergate.cache.keys import cacheable, context_key, exact_key, parse_request
from tiergate.errors import InvalidRequestError

from .conftest import chat


def test_exact_key_is_stable_across_formatting_and_dict_order() -> None:
    a = {"messages": [{"role": "user", "content": "How do I  sort a list?"}], "temperature": 0, "top_p": 1}
    b = {"top_p": 1, "temperature": 0, "messages": [{"content": "How do I sort a list?\n", "role": "user"}]}
    assert exact_key("t", "m", a) == exact_key("t", "m", b)
    assert len(exact_key("t", "m", a)) == 32


@pytest.mark.parametrize("change", [
    lambda r: r.update(temperature=0.5),
    lambda r: r.update(max_tokens=10),
    lambda r: r.update(seed=7),
    lambda r: r.update(stop=["\n"]),
    lambda r: r.update(response_format={"type": "json_object"}),
    lambda r: r.update(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    lambda r: r["messages"].insert(0, {"role": "system", "content": "Answer in French."}),
    lambda r: r["messages"][-1].update(content="How do I sort a tuple?"),
    lambda r: r["messages"].insert(0, {"role": "user", "content": "hi"}),
])
def test_exact_key_changes_with_everything_that_changes_the_output(change) -> None:
    base = chat("How do I sort a list?")
    other = chat("How do I sort a list?")
    change(other)
    assert exact_key("t", "m", base) != exact_key("t", "m", other)


def test_exact_key_separates_tenants_and_models_but_not_transport_options() -> None:
    r = chat("How do I sort a list?")
    assert exact_key("t1", "m", r) != exact_key("t2", "m", r)
    assert exact_key("t", "m1", r) != exact_key("t", "m2", r)
    streamed = {**r, "stream": True, "stream_options": {"include_usage": True}, "user": "u42"}
    assert exact_key("t", "m", r) == exact_key("t", "m", streamed)


def test_context_key_covers_earlier_turns_only() -> None:
    a = chat("How do I read a file in Java?", "Use Files.readAllLines.", "And in Python?")
    b = chat("How do I sort an array in Java?", "Use Arrays.sort.", "And in Python?")
    c = chat("how do I read a file in  Java?", "Use Files.readAllLines.", "And in Rust?")
    assert context_key("t", "m", a) != context_key("t", "m", b)
    assert context_key("t", "m", a) == context_key("t", "m", c)  # case and spacing do not matter
    view = parse_request("t", "m", a)
    assert view.query == "And in Python?"
    assert view.history == ("How do I read a file in Java?",)


def test_non_user_last_turn_has_no_semantic_query() -> None:
    r = {"messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "42", "tool_call_id": "1"}]}
    assert parse_request("t", "m", r).query == ""


def test_cacheable_rule() -> None:
    assert cacheable(parse_request("t", "m", chat("q", temperature=0, n=3)), 1.0) is None
    assert cacheable(parse_request("t", "m", chat("q", temperature=0.7)), 1.0) is None
    assert cacheable(parse_request("t", "m", chat("q", temperature=0.7, n=2)), 1.0) is not None
    assert cacheable(parse_request("t", "m", chat("q", temperature=1.5)), 1.0) is not None
    default_temperature = {"messages": [{"role": "user", "content": "q"}]}  # OpenAI's default is 1
    assert cacheable(parse_request("t", "m", default_temperature), 0.5) is not None


@pytest.mark.parametrize("bad", [{}, {"messages": []}, {"messages": [{"content": "x"}]},
                                 {"messages": [{"role": "user", "content": 5}]}])
def test_malformed_requests_are_rejected_clearly(bad) -> None:
    with pytest.raises(InvalidRequestError):
        exact_key("t", "m", bad)
