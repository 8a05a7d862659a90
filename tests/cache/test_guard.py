from __future__ import annotations

import pytest

from tiergate.cache.guard import Guard, tokenize
from tiergate.cache.lexicon import Lexicon


@pytest.fixture(scope="module")
def guard(lexicon: Lexicon) -> Guard:
    return Guard(lexicon)


@pytest.mark.parametrize("a, b", [
    ("How do I reverse a list in Python?", "What's the way to reverse a Python list?"),
    ("How tall is Mount Everest?", "What is the height of Mount Everest?"),
    ("Write a short poem about autumn", "Write a brief poem about autumn"),
    ("How do I merge two dictionaries in Python?", "How can I combine two dicts in Python?"),
    ("How do I increase the heap size of the JVM?", "How do I increase the heap size of the Java virtual machine?"),
    ("What is the current price of bitcoin?", "bitcoin price now"),
    ("How many calories are in a banana?", "How many calories in one banana?"),
])
def test_paraphrases_pass(guard: Guard, a: str, b: str) -> None:
    assert guard.check(a, b) is None
    assert guard.check(b, a) is None


@pytest.mark.parametrize("kind, a, b", [
    ("negation", "Why is my code working?", "Why isn't my code working?"),
    ("negation", "Give me a pancake recipe", "Give me a pancake recipe without eggs"),
    ("antonym", "How do I encrypt a file with openssl?", "How do I decrypt a file with openssl?"),
    ("antonym", "Sort the list in ascending order", "Sort the list in descending order"),
    ("antonym", "Is coffee good for you?", "Is coffee bad for you?"),
    ("number", "What is 15% of 240?", "What is 20% of 240?"),
    ("number", "Who was the first president of Brazil?", "Who was the second president of Brazil?"),
    ("number", "Solve 3x + 7 = 22", "Solve 3x - 7 = 22"),
    ("date", "What is the weather in Oslo tomorrow?", "What is the weather in Oslo today?"),
    ("date", "Who won the World Cup in 2018?", "Who won the World Cup in 2022?"),
    ("date", "Will it rain this weekend?", "Will it rain next weekend?"),
    ("unit", "Convert 5 kilometers to miles", "Convert 5 kilometers to meters"),
    ("unit", "How many days are in a year?", "How many weeks are in a year?"),
    ("entity", "What is the capital of France?", "What is the capital of Germany?"),
    ("entity", "what is the capital of france", "what is the capital of germany"),
    ("entity", "how do i reverse a list in python", "how do i reverse a list in rust"),
    ("entity", "How do I install numpy?", "How do I install kubernetes?"),
    ("comparative", "Which is the tallest building in Dubai?", "Which is the oldest building in Dubai?"),
    ("comparative", "Is Python faster than Java?", "Is Python slower than Java?"),
    ("scope", "How do I delete all files in a folder?", "How do I delete only hidden files in a folder?"),
    ("scope", "How do I rename a branch in git?", "How do I rename a remote branch in git?"),
    ("direction", "Convert celsius to fahrenheit", "Convert fahrenheit to celsius"),
    ("direction", "What is 15% of 240?", "240 is what percent of 15?"),
    ("substitution", "What is the time complexity of heapsort?", "What is the space complexity of heapsort?"),
])
def test_traps_are_refused(guard: Guard, kind: str, a: str, b: str) -> None:
    assert guard.check(a, b) is not None, kind
    assert guard.check(b, a) is not None, kind


def test_identical_texts_pass(guard: Guard) -> None:
    assert guard.check("Anything at all 42", "Anything at all 42") is None


def test_tokenizer_keeps_identifiers_and_expands_contractions() -> None:
    toks = [t.text for t in tokenize("Isn't Node.js faster than C++ or C#? 5km, $3.50")]
    assert toks[:2] == ["is", "not"]
    assert "node.js" in toks and "c++" in toks and "c#" in toks
    assert "5" in toks and "km" in toks and "$" in toks and "3.50" in toks
