from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tiergate.config import load_settings

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
MUSIQUE = SHARED / "musique_s.json"


class HashEmbedder:
    """A fast deterministic stand-in (hashed bag of words) for tests of storage and update logic.

    The recall tests use the real packaged model; this one only has to be a fixed function of the
    text. It uses the real tokenizer of the packaged model, so chunking is tested for real.
    """

    model_id = "hash-bow@test"
    dim = 64
    max_tokens = 256

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.calls = 0
        self.encoded = 0

    def encode(self, texts, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.calls += 1
        self.encoded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"\w+", t.lower()):
                h = int.from_bytes(hashlib.blake2b(w.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
            out[i, 0] += 0.01
        return out / np.linalg.norm(out, axis=1, keepdims=True)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


class CachedEmbedder:
    """The real embedder with a text -> vector cache, so the session embeds each text once."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model_id, self.dim = inner.model_id, inner.dim
        self.tokenizer, self.max_tokens = inner.tokenizer, inner.max_tokens
        self.cache: dict[str, np.ndarray] = {}
        self.encoded = 0

    def encode(self, texts, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            for t, v in zip(todo, self.inner.encode(todo, batch_size=64), strict=True):
                self.cache[t] = v
        self.encoded += len(texts)
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    from tiergate.config import ModelsConfig
    from tiergate.models import embedder_dir

    return AutoTokenizer.from_pretrained(embedder_dir(ModelsConfig()), local_files_only=True)


@pytest.fixture
def hash_embedder(tokenizer) -> HashEmbedder:
    return HashEmbedder(tokenizer)


@pytest.fixture
def settings(tmp_path):
    return load_settings(data_dir=tmp_path / "var")


@pytest.fixture(scope="session")
def real_embedder():
    from tiergate.models import load_embedder

    return CachedEmbedder(load_embedder(load_settings().models))


def musique():
    if not MUSIQUE.is_file():
        pytest.skip(f"MuSiQue data not found at {MUSIQUE} (shared/data is absent)")
    data = json.loads(MUSIQUE.read_text(encoding="utf-8"))
    texts = list(dict.fromkeys(c["text"] for q in data for c in q["ctxs"]))
    titles = {}
    for q in data:
        for c in q["ctxs"]:
            titles.setdefault(c["text"], c["title"])
    records = [
        {"id": f"p{i}", "text": t, "metadata": {"title": titles[t], "shard": i % 4}} for i, t in enumerate(texts)
    ]
    return records, [q["question"] for q in data]


@pytest.fixture(scope="session")
def musique_corpus():
    return musique()


@pytest.fixture(scope="session")
def musique_vectors(musique_corpus, real_embedder):
    """Passage and question embeddings, computed once per session (the slow part)."""
    records, questions = musique_corpus
    p = real_embedder.encode([r["text"] for r in records])
    q = real_embedder.encode(questions)
    return p, q


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def toy_records(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(400)]
    out = []
    for i in range(n):
        topic = i % 10
        body = " ".join(rng.choice(words[topic * 40 : topic * 40 + 40], size=30))
        out.append({"id": f"d{i}", "text": f"topic{topic} {body}", "metadata": {"topic": topic, "tenant": "ab"[i % 2]}})
    return out
