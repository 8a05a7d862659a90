"""What the response cache saves: backend calls, tokens, seconds and money, per model.

It observes every chat completion once its last byte has left (the request middleware calls
`observe_request`): the route has noted the cache outcome, the model and the answer's tokens.
Answers the backend produced teach the typical latency and token count of each model; every hit
then counts the replayed answer's tokens (or the model's typical count when the answer carried
no usage) and the time the typical backend call would have taken beyond the hit's own time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

CHAT = "/v1/chat/completions"
HITS = ("exact", "semantic")
OTHER = "other"


@dataclass
class ModelSavings:
    hits: int = 0
    tokens: float = 0.0
    seconds: float = 0.0
    cost: float = 0.0
    # What a backend call of this model typically costs (exponential moving averages).
    backend_seconds: float | None = None
    backend_tokens: float | None = None


class Savings:
    """Thread-safe totals per model; models outside `known` add up under 'other' (bounded labels)."""

    def __init__(self, cost_per_1k: dict[str, float], known: set[str], alpha: float = 0.1) -> None:
        self.cost_per_1k = cost_per_1k
        self.known = known
        self.alpha = alpha
        self._lock = threading.Lock()
        self._models: dict[str, ModelSavings] = {}

    def label(self, model: str | None) -> str:
        return model if model in self.known else OTHER

    def observe(self, outcome: str, model: str | None, tokens: int | None, seconds: float) -> None:
        name = self.label(model)
        with self._lock:
            m = self._models.setdefault(name, ModelSavings())
            if outcome == "miss":
                m.backend_seconds = _ewma(m.backend_seconds, seconds, self.alpha)
                if tokens:
                    m.backend_tokens = _ewma(m.backend_tokens, tokens, self.alpha)
                return
            if outcome not in HITS:
                return
            saved_tokens = tokens if tokens else (m.backend_tokens or 0.0)
            m.hits += 1
            m.tokens += saved_tokens
            if m.backend_seconds is not None:
                m.seconds += max(0.0, m.backend_seconds - seconds)
            m.cost += saved_tokens / 1000.0 * self.cost_per_1k.get(name, 0.0)

    def observe_request(self, path: str, status: int, state: dict[str, Any], seconds: float) -> None:
        if path == CHAT and status == 200:
            self.observe(state.get("cache", ""), state.get("model"), state.get("tokens"), seconds)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v.__dict__) for k, v in self._models.items()}

    def totals(self) -> dict[str, float]:
        snap = self.snapshot().values()
        return {k: float(sum(m[k] for m in snap)) for k in ("hits", "tokens", "seconds", "cost")}


def _ewma(old: float | None, new: float, alpha: float) -> float:
    return new if old is None else old + alpha * (new - old)
