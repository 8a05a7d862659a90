"""Query categories: an explicit choice wins, else a classifier on the query embedding.

The classifier scores each category by the mean cosine of the query to its k nearest example
prompts (k-nearest-examples is sturdier than one centroid when a category is a union of
clusters, as "code" is). Below `min_classifier_score` nothing is similar enough and the default
category is used; near ties go to the safer category (never cached, then shortest TTL), so a
borderline personal or time-sensitive question is not served a long-lived answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tiergate.cache.config import CacheConfig
from tiergate.errors import InvalidRequestError


class Encoder(Protocol):
    dim: int

    def encode(self, texts: list[str], batch_size: int = 64) -> np.ndarray: ...


@dataclass(frozen=True)
class Classification:
    category: str
    score: float  # best category's score (mean cosine to its nearest examples)
    source: str  # "explicit" | "classifier" | "default"


class CategoryClassifier:
    def __init__(self, config: CacheConfig, encoder: Encoder, *, k: int = 3) -> None:
        self.config = config
        self.k = k
        self.names: list[str] = []
        mats = []
        for cat in config.categories:
            if cat.examples:
                self.names.append(cat.name)
                mats.append(encoder.encode(list(cat.examples)))
        self._examples = mats

    def example_vectors(self) -> np.ndarray:
        """The embeddings of every category's example prompts, stacked."""
        return np.concatenate(self._examples) if self._examples else np.zeros((0, 0), dtype=np.float32)

    def resolve(self, name: str) -> str:
        """Validate an explicit category (header or request field)."""
        name = name.strip().lower()
        if self.config.category(name) is None:
            known = ", ".join(c.name for c in self.config.categories)
            raise InvalidRequestError(f"unknown cache category {name!r}; known: {known}", param="category")
        return name

    def scores(self, vector: np.ndarray) -> dict[str, float]:
        out = {}
        for name, mat in zip(self.names, self._examples, strict=True):
            sims = np.sort(mat @ vector)[::-1][: self.k]
            out[name] = float(sims.mean())
        return out

    def classify(self, vector: np.ndarray, hint: str | None = None) -> Classification:
        if hint:
            return Classification(self.resolve(hint), 1.0, "explicit")
        scores = self.scores(vector)
        if not scores:
            return Classification(self.config.default_category, 0.0, "default")
        top = max(scores.values())
        if top < self.config.min_classifier_score:
            return Classification(self.config.default_category, top, "default")
        # Near ties go to the safer policy: never cached first, then the shortest TTL.
        close = [n for n, s in scores.items() if s >= top - self.config.classifier_tie_margin]
        best = min(close, key=self._risk_order)
        return Classification(best, scores[best], "classifier")

    def _risk_order(self, name: str) -> tuple[int, float]:
        cat = self.config.category(name)
        assert cat is not None
        return (1 if cat.enabled else 0, cat.ttl_s if cat.ttl_s is not None else float("inf"))
