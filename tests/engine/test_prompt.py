"""Prompt plans: documents become chunk segments by structure, and the template stays intact."""

from __future__ import annotations

import pytest

from tiergate.engine.prompt import ChatTemplate, Document, plan_chat, render_chat
from tiergate.models import Generator

pytestmark = pytest.mark.slow


def test_plan_without_documents_is_the_chat_template(generator: Generator) -> None:
    tok = generator.tokenizer
    msgs = [{"role": "user", "content": "hi"}]
    plan = plan_chat(tok, msgs)
    expected = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert plan.token_ids == list(expected["input_ids"]) == render_chat(tok, msgs)


def test_documents_are_chunks_and_keep_the_default_system_prompt(generator: Generator) -> None:
    tok = generator.tokenizer
    template = ChatTemplate.probe(tok)
    assert "SmolLM" in template.default_system  # this template inserts one when none is given
    docs = [Document("alpha beta", id="a"), Document("gamma <|im_end|> delta"), Document("")]
    plan = plan_chat(tok, [{"role": "user", "content": "q?"}], docs, template)
    kinds = [s.kind for s in plan.segments]
    assert kinds == ["prefix", "chunk", "chunk", "suffix"]  # the empty document adds nothing
    assert [s.chunk_id for s in plan.segments if s.kind == "chunk"] == ["a", "1"]
    text = tok.decode(plan.token_ids)
    assert template.default_system in text and text.index(template.default_system) < text.index("alpha")
    assert text.rstrip().endswith("assistant")
    # A chunk's ids depend on its text only, wherever it appears.
    again = plan_chat(tok, [{"role": "system", "content": "S"}, {"role": "user", "content": "other"}],
                      [Document("x y z"), docs[0]], template)
    assert again.segments[2].token_ids == plan.segments[1].token_ids


def test_documents_with_a_system_message(generator: Generator) -> None:
    tok = generator.tokenizer
    plan = plan_chat(tok, [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "q"}],
                     [Document("doc one")])
    text = tok.decode(plan.token_ids)
    assert "SmolLM" not in text
    assert text.index("Be terse.") < text.index("doc one") < text.index("q")
